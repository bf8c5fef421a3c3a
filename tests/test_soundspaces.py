"""SoundSpaces 1.0 data: import of a hand-written dataset, export/import round trip, errors naming files."""

from __future__ import annotations

import gzip
import json
import logging
import math
import pickle
import re
import shutil
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import soundfile as sf
import torch
from scene_helpers import bake_audio_only, cheap_acoustics
from scipy.io import wavfile

from asgf_nav.scenes import soundspaces as ss
from asgf_nav.scenes import soundspaces_import as ssi
from asgf_nav.scenes.presets import UnknownSceneError
from asgf_nav.scenes.store import SceneStore, SceneStoreError, bake_lock
from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import generate_scene_episodes
from asgf_nav.tasks.episodes import Episode, EpisodeError, episode_dataset_path, load_episodes, resolve_episode
from asgf_nav.tasks.factory import split_sound_names
from asgf_nav.tasks.navigation import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, oracle_plan
from asgf_nav.tasks.soundspaces_export import ExportError, export_world
from asgf_nav.tasks.soundspaces_world import load_soundspaces_world
from asgf_nav.tasks.spectrogram import spectrogram_np
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

REPLICA_OFFSET = 1.5528907
SR = 44100


def make_cfg(
    tmp: Path,
    ss_root: Path,
    sensors=("rgb", "depth", "spectrogram"),
    source="soundspaces",
    on_missing="error",
    image_size=6,  # the handwritten dataset's views
) -> SimpleNamespace:
    scenes = SimpleNamespace(
        dataset="replica",
        data_root=str(tmp / "data"),
        source=source,
        soundspaces_root=str(ss_root),
        rir_cache_mb=4,
        rir_on_missing=on_missing,
        num_scenes=None,
        image_size=image_size,
    )
    task = SimpleNamespace(
        sound_split="heard",
        sensors=list(sensors),
        max_steps=500,
        success_distance=1.0,
        slack_reward=-0.01,
        success_reward=10.0,
        distance_reward_scale=1.0,
    )
    return SimpleNamespace(scenes=scenes, task=task)


# ------------------------------------------------------------------------------------------------------------
# A tiny dataset written the way SoundSpaces writes it, without the exporter.
# 3 x 3 grid, 0.5 m apart; points.txt has an extra row 9 that is not a graph node and node 4 (the centre)
# is missing, so node ids are not contiguous. RIR sample [0] encodes receiver, [1] source, [2] azimuth.
CELLS = {0: (0, 0), 1: (1, 0), 2: (2, 0), 3: (0, 1), 5: (2, 1), 6: (0, 2), 7: (1, 2), 8: (2, 2)}
FLOOR_Z = 0.0625  # mesh height of the nodes -> habitat y = FLOOR_Z - 1.5528907


def node_point(node: int) -> tuple[float, float, float]:
    ix, iz = CELLS[node]
    return (1.0 + 0.5 * ix, FLOOR_Z - REPLICA_OFFSET, -2.0 + 0.5 * iz)


def encoded_rir(receiver: int, source: int, azimuth: int, length: int = 300) -> np.ndarray:
    rir = np.zeros((length, 2), dtype=np.float32)
    rir[0] = receiver / 10.0
    rir[1] = source / 10.0
    rir[2, 0] = azimuth / 360.0
    rir[2, 1] = -azimuth / 360.0
    rir[10:, 0] = np.float32(0.01) * (1 + receiver)
    return rir


def yaw_quaternion(deg: float) -> list[float]:
    half = math.radians(deg) / 2.0
    return [0.0, math.sin(half), 0.0, math.cos(half)]


def write_soundspaces_dataset(root: Path, scene: str = "office_9") -> None:
    """One scene; call again with another name for a split of several scenes."""
    meta = root / "metadata" / "replica" / scene
    meta.mkdir(parents=True)
    rows = []
    for node in range(10):
        if node in CELLS:
            x, y, z = node_point(node)
        else:
            x, y, z = 9.0, FLOOR_Z - REPLICA_OFFSET, 9.0
        rows.append(f"{node}\t{x}\t{-z}\t{y + REPLICA_OFFSET}")  # Z-up mesh columns
    (meta / "points.txt").write_text("\n".join(rows) + "\n")
    graph = nx.Graph()
    for node in CELLS:
        graph.add_node(node, point=node_point(node))
    for a, (ax, az) in CELLS.items():
        for b, (bx, bz) in CELLS.items():
            if a < b and abs(ax - bx) + abs(az - bz) == 1:
                graph.add_edge(a, b)
    with open(meta / "graph.pkl", "wb") as f:
        pickle.dump(graph, f)
    for azimuth in (0, 90, 180, 270):
        folder = root / "binaural_rirs" / "replica" / scene / str(azimuth)
        folder.mkdir(parents=True)
        for r in CELLS:
            for s in CELLS:
                wavfile.write(folder / f"{r}_{s}.wav", SR, encoded_rir(r, s, azimuth))
    frames = {}
    for node in CELLS:
        for yaw in (0, 90, 180, 270):
            rgb = np.full((6, 6, 4), 255, dtype=np.uint8)  # RGBA as habitat-sim renders it
            rgb[..., 0], rgb[..., 1], rgb[..., 2] = node, yaw // 90, 7
            depth = np.full((6, 6, 1), 0.5 * node + yaw / 360.0, dtype=np.float32)
            frames[(node, yaw)] = {"rgb": rgb, "depth": depth}
    (root / "scene_observations" / "replica").mkdir(parents=True, exist_ok=True)
    with open(root / "scene_observations" / "replica" / f"{scene}.pkl", "wb") as f:
        pickle.dump(frames, f)
    episodes = [
        {
            "episode_id": "0",
            "scene_id": f"{scene}/habitat/mesh_semantic.ply",
            "start_position": list(node_point(6)),
            "start_rotation": yaw_quaternion(0.0),
            "goals": [{"position": list(node_point(2)), "radius": 1e-5}],
            "info": {"sound": "telephone", "geodesic_distance": 2.0, "num_action": 7},
        },
        {
            "episode_id": "1",
            "scene_id": f"{scene}/habitat/mesh_semantic.ply",
            "start_position": list(node_point(7)),
            "start_rotation": yaw_quaternion(90.0),
            "goals": [{"position": list(node_point(5)), "radius": 1e-5}],
            "info": {"sound": "telephone", "geodesic_distance": 1.0},
        },
    ]
    split_dir = root / "datasets" / "audionav" / "replica" / "v1" / "train_telephone"
    (split_dir / "content").mkdir(parents=True, exist_ok=True)
    with gzip.open(split_dir / "train_telephone.json.gz", "wt") as f:
        json.dump({"episodes": []}, f)
    with gzip.open(split_dir / "content" / f"{scene}.json.gz", "wt") as f:
        json.dump({"episodes": episodes}, f)
    sounds = root / "sounds" / "1s_all"
    sounds.mkdir(parents=True, exist_ok=True)
    t = np.arange(22050) / 22050.0
    sf.write(sounds / "telephone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)


@pytest.fixture()
def ss_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "soundspaces"
    write_soundspaces_dataset(root)
    return root


def test_points_conversion_is_soundspaces():
    habitat = ss.mesh_to_habitat(np.array([[1.0, 2.0, 3.0]]), "replica")
    np.testing.assert_allclose(habitat, [[1.0, 3.0 - 1.5528907, -2.0]])
    np.testing.assert_allclose(ss.mesh_to_habitat(np.array([[1.0, 2.0, 3.0]]), "mp3d"), [[1.0, 1.5, -2.0]])
    np.testing.assert_allclose(ss.habitat_to_mesh(habitat, "replica"), [[1.0, 2.0, 3.0]])
    assert [ss.azimuth_for_yaw(k) for k in range(4)] == [0, 270, 180, 90]


def test_import_handwritten_dataset(tmp_path: Path, ss_dataset: Path):
    cfg = make_cfg(tmp_path, ss_dataset)
    assert ssi.scene_source(cfg) == "soundspaces"
    world = load_soundspaces_world(cfg, "train")
    scene = world.scene("office_9")
    assert world.sample_rate == 44100 and scene.grid_size == 0.5 and scene.num_nodes == 8
    ids = [0, 1, 2, 3, 5, 6, 7, 8]
    np.testing.assert_array_equal(scene.positions, [node_point(n) for n in ids])  # graph 'point', float64
    idx = {n: i for i, n in enumerate(ids)}
    # yaw 0 faces -Z: from node 7 (ix 1, iz 2) that is the missing centre node 4, a collision;
    # from node 6 (0, 2) it reaches node 3 (0, 1).
    assert scene.neighbors[idx[7], 0] == -1
    assert scene.neighbors[idx[6], 0] == idx[3]
    assert scene.neighbors[idx[6], 3] == idx[7]  # yaw 270 faces +X
    assert scene.neighbors[idx[7], 1] == idx[6]  # yaw 90 faces -X
    assert scene.neighbors[idx[3], 2] == idx[6]  # yaw 180 faces +Z
    assert scene.geodesic_hops[idx[6], idx[2]] == 4 and scene.geodesic_hops[idx[7], idx[5]] == 2
    np.testing.assert_array_equal(scene.source_nodes, np.arange(8))
    # views: alpha dropped, keyed by yaw (not azimuth), depth kept in metres
    assert scene.rgb.shape == (8, 4, 6, 6, 3)
    assert scene.rgb[idx[5], 1, 0, 0].tolist() == [5, 1, 7]
    assert float(scene.depth[idx[5], 3, 0, 0]) == pytest.approx(2.5 + 0.75, abs=1e-3)
    # RIR folder = (-yaw) % 360 and node ids (not indices) in the file name
    for k, azimuth in enumerate((0, 270, 180, 90)):
        rir = scene.rir(idx[7], idx[5], k)
        np.testing.assert_array_equal(rir, encoded_rir(7, 5, azimuth))
    # the sound is resampled to the RIR rate
    assert world.sound("telephone").shape == (44100,)


def test_turning_left_changes_the_rir_folder_the_right_way(tmp_path: Path, ss_dataset: Path):
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])
    world = load_soundspaces_world(cfg, "train")
    episodes = load_episodes(episode_dataset_path(ss_dataset, "replica", "train", "heard"))
    env = AudioNavEnv(world, episodes, sensors=["spectrogram"])
    obs, _ = env.reset(options={"episode_index": 1})  # start node 7, yaw 90 (quaternion) -> folder 270
    assert env.yaw == 1
    sound = world.sound("telephone")
    expect = {az: spectrogram_np(sound, encoded_rir(7, 5, az), SR) for az in (0, 90, 180, 270)}
    np.testing.assert_array_equal(obs["spectrogram"], expect[270])
    for action, azimuth in ((TURN_LEFT, 180), (TURN_LEFT, 90), (TURN_LEFT, 0), (TURN_RIGHT, 90)):
        obs, *_ = env.step(action)
        np.testing.assert_array_equal(obs["spectrogram"], expect[azimuth])
    assert env.episodes[0].num_action == 7 and env.episodes[1].num_action is not None


def test_missing_views_are_reported_and_audio_only_runs(tmp_path: Path, ss_dataset: Path):
    (ss_dataset / "scene_observations" / "replica" / "office_9.pkl").unlink()
    with pytest.raises(ss.SoundSpacesDataError, match=r"office_9\.pkl"):
        load_soundspaces_world(make_cfg(tmp_path, ss_dataset), "train")
    world = load_soundspaces_world(make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"]), "train")
    assert world.scene("office_9").rgb is None


def test_a_soundspaces_splits_sounds_are_those_its_episodes_name(tmp_path: Path, ss_dataset: Path):
    """Baking spectrograms or training the baselines' audio model on SoundSpaces data uses its sounds,
    not the sound bank's names, which SoundSpaces does not have."""
    versions = ss_dataset / "datasets" / "audionav" / "replica" / "v1"
    with gzip.open(versions / "train_telephone" / "content" / "office_9.json.gz", "rt") as f:
        records = json.load(f)["episodes"]
    for record, sound in zip(records, ("siren", "fan")):
        record["info"]["sound"] = sound
    (versions / "train_multiple" / "content").mkdir(parents=True)
    with gzip.open(versions / "train_multiple" / "content" / "office_9.json.gz", "wt") as f:
        json.dump({"episodes": records}, f)
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])
    world = load_soundspaces_world(cfg, "train")
    assert split_sound_names(cfg, "train", world) == ["telephone"]
    cfg.task.sound_split = "unheard"
    assert split_sound_names(cfg, "train", world) == ["fan", "siren"]


def test_views_pickled_as_habitat_observations_load_without_habitat(ss_dataset: Path, monkeypatch):
    """SoundSpaces' cache_observations.py has pickled habitat ``Observations`` since 2022: rgb without alpha,
    depth normalised to [0, 1] by the sensor suite. They load without habitat, their depth back in metres."""
    path = ss_dataset / "scene_observations" / "replica" / "office_9.pkl"
    nodes = np.array(sorted(CELLS))
    rgb, metres = ss.read_observations(path, nodes)
    with open(path, "rb") as f:
        frames = pickle.load(f)

    class Observations(dict):
        pass

    Observations.__module__, Observations.__qualname__ = "habitat.core.simulator", "Observations"
    module = types.ModuleType("habitat.core.simulator")
    module.Observations = Observations
    for name in ("habitat", "habitat.core", "habitat.core.simulator"):
        monkeypatch.setitem(sys.modules, name, module)
    for scale, name in ((1 / ss.HABITAT_MAX_DEPTH, "normalised.pkl"), (1.0, "metres.pkl")):
        suite = {k: Observations(rgb=v["rgb"][..., :3], depth=v["depth"] * scale) for k, v in frames.items()}
        (path.parent / name).write_bytes(pickle.dumps(suite))
    for name in ("habitat", "habitat.core", "habitat.core.simulator"):
        monkeypatch.delitem(sys.modules, name)
    for name in ("normalised.pkl", "metres.pkl"):  # metres.pkl: depths above 1 m, so not normalised
        got_rgb, got_depth = ss.read_observations(path.parent / name, nodes)
        np.testing.assert_array_equal(got_rgb, rgb)
        np.testing.assert_allclose(got_depth.astype(np.float32), metres.astype(np.float32), rtol=1e-3)


def test_named_scenes_outside_the_split_are_refused(tmp_path: Path, ss_dataset: Path):
    """A downloaded scene of another split, named for this one, would leak test scenes into training."""
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])
    assert list(load_soundspaces_world(cfg, "train", ["office_9"]).scenes) == ["office_9"]
    val = episode_dataset_path(ss_dataset, "replica", "val", "heard")
    (val.parent / "content").mkdir(parents=True)
    with gzip.open(val.parent / "content" / "room_1.json.gz", "wt") as f:
        json.dump({"episodes": []}, f)
    with pytest.raises(UnknownSceneError, match=r"split 'val' has no scene 'office_9'.*room_1"):
        load_soundspaces_world(cfg, "val", ["office_9"])
    with pytest.raises(UnknownSceneError, match=r"split 'train' has no scene 'room_1'"):
        load_soundspaces_world(cfg, "train", ["room_1"])


def test_unheard_val_and_test_read_soundspaces_unheard_folders(tmp_path: Path, ss_dataset: Path):
    """SoundSpaces' baselines evaluate unheard sounds on {val,test}_multiple_unheard; some downloads call
    them {split}_multiple. The first is used where both hold episodes, either one alone is found, and an
    empty _unheard folder is passed over."""
    versions = ss_dataset / "datasets" / "audionav" / "replica" / "v1"
    train = versions / "train_telephone" / "content" / "office_9.json.gz"
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])
    cfg.task.sound_split = "unheard"
    (versions / "test_multiple_unheard" / "content").mkdir(parents=True)  # empty: no split
    missing = rf"{re.escape(str(versions / 'test_multiple' / 'test_multiple.json.gz'))} does not exist "
    missing += rf"\(nor episodes in {re.escape(str(versions / 'test_multiple'))}_unheard/\)"
    with pytest.raises(ss.SoundSpacesDataError, match=missing):
        load_soundspaces_world(cfg, "test")
    for name in ("test_multiple", "test_multiple_unheard"):
        (versions / name / "content").mkdir(parents=True, exist_ok=True)
        shutil.copy(train, versions / name / "content" / "office_9.json.gz")
        assert episode_dataset_path(ss_dataset, "replica", "test", "unheard").parent.name == name
        assert list(load_soundspaces_world(cfg, "test").scenes) == ["office_9"]
    (versions / "train_multiple_unheard" / "content").mkdir(parents=True)  # training never reads _unheard
    shutil.copy(train, versions / "train_multiple_unheard" / "content" / "office_9.json.gz")
    assert episode_dataset_path(ss_dataset, "replica", "train", "unheard").parent.name == "train_multiple"


def test_bad_rir_files_raise_naming_the_file(tmp_path: Path, ss_dataset: Path):
    folder = ss_dataset / "binaural_rirs" / "replica" / "office_9"
    (folder / "270" / "7_5.wav").unlink()
    (folder / "0" / "7_5.wav").write_bytes(b"RIFF garbage")
    wavfile.write(folder / "180" / "7_5.wav", SR, np.zeros((0, 2), dtype=np.float32))
    wavfile.write(folder / "90" / "7_5.wav", 16000, encoded_rir(7, 5, 90))
    for folder_name, size in (("0", None), ("90", 30)):  # cut short (an interrupted download), a damaged header
        wav = folder / folder_name / "8_5.wav"
        data = wav.read_bytes()
        wav.write_bytes(data[: size or len(data) // 2])
    # libsndfile writes a PEAK chunk into float files, which scipy warns it does not know: still a whole file
    sf.write(folder / "180" / "8_5.wav", encoded_rir(8, 5, 180), SR, subtype="FLOAT")
    assert b"PEAK" in (folder / "180" / "8_5.wav").read_bytes()
    scene = load_soundspaces_world(make_cfg(tmp_path, ss_dataset), "train").scene("office_9")
    seven, eight, five = 6, 7, 4
    for receiver, k, pattern in (
        (seven, 1, r"270/7_5\.wav does not exist"),
        (seven, 0, r"0/7_5\.wav is unreadable"),
        (seven, 2, r"180/7_5\.wav is empty"),
        (seven, 3, r"90/7_5\.wav is sampled at 16000"),
        (eight, 0, r"0/8_5\.wav is unreadable.*EOF"),
        (eight, 0, r"0/8_5\.wav is unreadable.*EOF"),  # scipy warns once per process; this is still an error
        (eight, 3, r"90/8_5\.wav is unreadable"),
    ):
        with pytest.raises(ss.SoundSpacesDataError, match=pattern):
            scene.rir(receiver, five, k)
    with pytest.warns(wavfile.WavFileWarning, match="not understood"):
        np.testing.assert_array_equal(scene.rir(eight, five, 2), encoded_rir(8, 5, 180))


def test_silence_fallback_is_explicit_and_counted(tmp_path: Path, ss_dataset: Path, caplog, monkeypatch):
    """A replaced RIR is warned about at once (a scene's 1st, 10th, 100th, ...: not a line for each file of a
    missing folder) and counted, and the count is logged again at exit, where a long run's log ends (this
    process's own count and exit hook are swapped for the test's)."""
    from types import SimpleNamespace

    at_exit: list = []
    monkeypatch.setattr(ss, "_SILENCED", {})
    monkeypatch.setattr(ss, "atexit", SimpleNamespace(register=at_exit.append))  # this module's calls only
    missing = ss_dataset / "binaural_rirs" / "replica" / "office_9" / "270" / "7_5.wav"
    missing.unlink()
    cfg = make_cfg(tmp_path, ss_dataset, on_missing="silence")
    scene = load_soundspaces_world(cfg, "train").scene("office_9")
    with caplog.at_level(logging.WARNING):
        rir = scene.rir(6, 4, 1)
    assert "270/7_5.wav" in caplog.text
    np.testing.assert_array_equal(rir, np.zeros((SR, 2), dtype=np.float32))
    assert ss.silence_fallback_summary() == {"replica/office_9": 1}
    scene.rir.__self__._cache.clear()  # dropped from the cache and read again: the same file, counted once
    assert not scene.rir(6, 4, 1).any() and ss.silence_fallback_summary() == {"replica/office_9": 1}
    assert at_exit == [ss._log_silence_summary]  # registered once, by the first replacement
    assert caplog.text.count("using silence instead") == 1 and "rir_on_missing" not in caplog.text  # it is set
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        at_exit[0]()
    assert caplog.messages == [
        f"1 binaural RIRs were missing or unreadable and replaced by silence: replica/office_9: 1 (e.g. {missing})"
    ]
    caplog.clear()
    for path in sorted(missing.parent.glob("*.wav"))[:20]:  # a missing folder: warned at the 1st, 10th, ...
        path.unlink()
    with caplog.at_level(logging.WARNING):
        for receiver in range(8):
            for source in range(8):
                scene.rir(receiver, source, 1)
    silenced = ss.silence_fallback_summary()["replica/office_9"]
    assert silenced == 21 and len(caplog.records) == 1
    assert caplog.messages[0].endswith(
        "is missing or unreadable; using silence instead (10 file(s) of replica/office_9 so far)"
    )


def test_each_world_keeps_the_rir_files_it_heard_as_silence(tmp_path: Path, ss_dataset: Path, monkeypatch):
    """Two worlds of one process (the two sound splits of an evaluation) each know the files they replaced,
    also one the other replaced first, which the process-wide count holds once."""
    from types import SimpleNamespace

    monkeypatch.setattr(ss, "_SILENCED", {})
    monkeypatch.setattr(ss, "atexit", SimpleNamespace(register=lambda hook: None))
    rirs = ss_dataset / "binaural_rirs" / "replica" / "office_9" / "270"
    (rirs / "7_5.wav").unlink()
    (rirs / "8_5.wav").unlink()
    cfg = make_cfg(tmp_path, ss_dataset, on_missing="silence")
    first, second = (load_soundspaces_world(cfg, "train") for _ in range(2))
    first.scene("office_9").rir(6, 4, 1)
    first.scene("office_9").rir(7, 4, 1)
    second.scene("office_9").rir(6, 4, 1)
    assert ss.silenced_rir_files(first.scenes.values()) == {
        "replica/office_9": {str(rirs / f) for f in ("7_5.wav", "8_5.wav")}
    }
    assert ss.silenced_rir_files(second.scenes.values()) == {"replica/office_9": {str(rirs / "7_5.wav")}}
    assert ss.silence_fallback_summary() == {"replica/office_9": 2}  # the process's: both worlds' files once
    assert ss.silenced_rir_files([SimpleNamespace(rir=lambda r, s, y: None)]) == {}  # not SoundSpaces RIRs


def test_a_missing_azimuth_folder_is_found_when_the_scene_opens(tmp_path: Path, ss_dataset: Path, caplog):
    """A folder moved away was found file by file deep in training (with silence: one warning per RIR)."""
    import shutil

    shutil.rmtree(ss_dataset / "binaural_rirs" / "replica" / "office_9" / "90")
    with pytest.raises(ss.SoundSpacesDataError, match=r"office_9 lacks the azimuth folders \['90'\]; extract"):
        load_soundspaces_world(make_cfg(tmp_path, ss_dataset), "train")
    with caplog.at_level(logging.WARNING):
        world = load_soundspaces_world(make_cfg(tmp_path, ss_dataset, on_missing="silence"), "train")
    assert world is not None and "every RIR of those azimuths is heard as silence" in caplog.text


def test_corrupt_metadata_views_and_sounds_raise_naming_the_file(tmp_path: Path, ss_dataset: Path):
    meta = ss_dataset / "metadata" / "replica" / "office_9"
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    graph_bytes = (meta / "graph.pkl").read_bytes()
    (meta / "graph.pkl").write_bytes(graph_bytes[:20])
    with pytest.raises(ss.SoundSpacesDataError, match=r"graph\.pkl is unreadable"):
        ssi.import_scene(paths, tmp_path / "data", "office_9")
    (meta / "graph.pkl").write_bytes(graph_bytes)
    (meta / "points.txt").write_text("0\tone\ttwo\n")
    with pytest.raises(ss.SoundSpacesDataError, match=r"points\.txt"):
        ssi.import_scene(paths, tmp_path / "data", "office_9")
    obs = ss_dataset / "scene_observations" / "replica" / "office_9.pkl"
    frames = pickle.loads(obs.read_bytes())
    del frames[(8, 180)]
    obs.write_bytes(pickle.dumps(frames))
    with pytest.raises(
        ss.SoundSpacesDataError, match=r"office_9\.pkl has no rgb\+depth view for key \(node 8, yaw 180"
    ):
        ss.read_observations(obs, np.array(sorted(CELLS)))
    sounds = ss.SoundSpacesSounds(ss_dataset / "sounds" / "1s_all", SR)
    with pytest.raises(ss.SoundSpacesDataError, match=r"1s_all/dog\.wav"):
        sounds("dog")
    assert not ss.SoundSpacesPaths(tmp_path / "nowhere", "replica").available_scenes()


def test_sounds_without_librosa_name_the_install_when_the_world_loads(ss_dataset: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "librosa", None)  # a plain pip install has no librosa
    with pytest.raises(ss.SoundSpacesDataError, match=r"pip install '\.\[soundspaces\]' in the checkout"):
        ss.SoundSpacesSounds(ss_dataset / "sounds" / "1s_all", SR)


def test_reimport_follows_source_changes(tmp_path: Path, ss_dataset: Path):
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    directory = ssi.import_scene(paths, tmp_path / "data", "office_9")
    stamp = (directory / "positions.npy").stat().st_mtime_ns
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert (directory / "positions.npy").stat().st_mtime_ns == stamp  # up to date: untouched
    graph = pickle.loads((paths.graph_file("office_9")).read_bytes())
    graph.remove_node(8)
    paths.graph_file("office_9").write_bytes(pickle.dumps(graph))
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert len(np.load(directory / "positions.npy")) == 7
    intact = (directory / "positions.npy").read_bytes()
    (directory / "positions.npy").write_bytes(intact[:100])  # damaged since: imported again without --force
    with pytest.raises(SceneStoreError, match=r"positions.npy.*import_soundspaces.py .*--dataset replica --data-root"):
        _ = SceneStore(directory).array("positions")
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert (directory / "positions.npy").read_bytes() == intact


def test_auto_source_prefers_soundspaces_only_when_present(tmp_path: Path, ss_dataset: Path):
    assert ssi.scene_source(make_cfg(tmp_path, ss_dataset, source="auto")) == "soundspaces"
    assert ssi.scene_source(make_cfg(tmp_path, ss_dataset, source="embedded")) == "embedded"
    default = make_cfg(tmp_path, tmp_path, source="auto")
    default.scenes.soundspaces_root = None  # {data_root}/soundspaces, not there: the generated scenes
    assert ssi.scene_source(default) == "embedded" and load_soundspaces_world(default, "train") is None
    # a root named on purpose never falls back to the generated scenes: not there, empty, one level too high,
    # or for a dataset SoundSpaces does not have
    typo, empty = tmp_path / "sondspaces", tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ss.SoundSpacesDataError, match=f"^scenes.soundspaces_root: {typo} is not a directory"):
        ssi.scene_source(make_cfg(tmp_path, typo, source="auto"))
    for root in (empty, ss_dataset.parent):
        with pytest.raises(ss.SoundSpacesDataError, match=f"^scenes.soundspaces_root={root} but no replica scene"):
            ssi.scene_source(make_cfg(tmp_path, root, source="auto"))
    tiny = make_cfg(tmp_path, ss_dataset, source="auto")
    tiny.scenes.dataset = "tiny"
    with pytest.raises(ss.SoundSpacesDataError, match=r"needs scenes.dataset replica or mp3d, not 'tiny'"):
        ssi.scene_source(tiny)
    with pytest.raises(ss.SoundSpacesDataError, match="^scenes.source=soundspaces but no replica scene"):
        ssi.scene_source(make_cfg(tmp_path, empty, source="soundspaces"))


def test_rir_cache_limit_holds_for_the_whole_split(tmp_path: Path, ss_dataset: Path):
    """scenes.rir_cache_mb bounds the process: a split of many scenes shares it, no scene gets more."""
    for scene in ("office_7", "office_8"):
        write_soundspaces_dataset(ss_dataset, scene)
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])  # rir_cache_mb=4
    world = load_soundspaces_world(cfg, "train")
    assert sorted(world.scenes) == ["office_7", "office_8", "office_9"]
    shares = [scene.rir.__self__.cache_bytes for scene in world.scenes.values()]
    assert sum(shares) <= 4 * 2**20 and min(shares) > 0
    np.testing.assert_array_equal(world.scene("office_8").rir(6, 4, 0), encoded_rir(7, 5, 0))


def test_episode_errors_name_soundspaces_node_ids(tmp_path: Path, ss_dataset: Path):
    """Node ids skip 4 here, so a project index (7 for id 8) would send the user to the wrong node."""
    meta = ss_dataset / "metadata" / "replica" / "office_9"
    graph = pickle.loads((meta / "graph.pkl").read_bytes())
    graph.add_node(9, point=(3.0, FLOOR_Z - REPLICA_OFFSET, -2.0))  # no edge: unreachable
    (meta / "graph.pkl").write_bytes(pickle.dumps(graph))
    (meta / "source_nodes.txt").write_text("".join(f"{n}\n" for n in (0, 1, 2, 3, 5, 6, 7, 9)))  # not 8
    (ss_dataset / "scene_observations" / "replica" / "office_9.pkl").unlink()  # it has no views of node 9
    world = load_soundspaces_world(make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"]), "train")
    np.testing.assert_array_equal(world.scene("office_9").node_ids, [0, 1, 2, 3, 5, 6, 7, 8, 9])

    def episode(goal: list[float]) -> Episode:
        return Episode("3", "office_9/habitat/mesh_semantic.ply", list(node_point(6)), [0, 0, 0, 1], goal, "x", 1.0,
                       source="content/office_9.json.gz")  # fmt: skip

    with pytest.raises(
        EpisodeError,
        match=r"^episode 3 \(office_9 in content/office_9.json.gz\): goal node id 8 \(index 7\) at \[2\.0, .*\] is "
        r"not an acoustic source node of the scene \(SoundSpaces data: listed in its metadata's source_nodes.txt\)",
    ):
        resolve_episode(episode(list(node_point(8))), world)
    with pytest.raises(
        EpisodeError,
        match=r"goal node id 9 \(index 8\) at \[3\.0, .*\] is unreachable from start node id 6 \(index 5\)",
    ):
        resolve_episode(episode([3.0, FLOOR_Z - REPLICA_OFFSET, -2.0]), world)


def test_concurrent_imports_of_a_scene_wait_for_the_first(tmp_path: Path, ss_dataset: Path):
    """Ranks opening one scene at once import it once: the others wait for the scene's lock, then reuse it."""
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    directory = ssi.imported_scene_dir(tmp_path / "data", "replica", "office_9")
    done = threading.Event()
    other = threading.Thread(target=lambda: (ssi.import_scene(paths, tmp_path / "data", "office_9"), done.set()))
    with bake_lock(directory):  # another process is importing the scene
        other.start()
        assert not done.wait(0.5)
        assert not (directory / "manifest.json").exists()
    other.join(60)
    assert done.is_set() and SceneStore(directory).has_stage("layout") and SceneStore(directory).has_stage("vision")
    stamp = (directory / "positions.npy").stat().st_mtime_ns
    with bake_lock(directory):  # up to date: opened without waiting for the lock, nothing rewritten
        assert ssi.import_scene(paths, tmp_path / "data", "office_9") == directory
    assert (directory / "positions.npy").stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------------------------------------------
# Round trip: project world -> export -> import gives identical observations, rewards and metrics.
def scripted_actions(scene, episode, rng: np.random.Generator) -> list[int]:
    """Some wandering (turns, forward moves and collisions), then the oracle path and STOP."""
    hops = np.asarray(scene.geodesic_hops[:, episode.goal_node])
    node, yaw = episode.start_node, episode.start_yaw
    actions = [int(a) for a in rng.choice([MOVE_FORWARD, TURN_LEFT, TURN_RIGHT], size=6)]
    for a in actions:
        if a == MOVE_FORWARD and scene.neighbors[node, yaw] >= 0:
            node = int(scene.neighbors[node, yaw])
        elif a == TURN_LEFT:
            yaw = (yaw + 1) % 4
        elif a == TURN_RIGHT:
            yaw = (yaw - 1) % 4
    return actions + oracle_plan(scene.neighbors, hops, node, yaw)


def test_round_trip_export_import_is_identical(tmp_path: Path):
    scenes = [
        grid_scene(
            "grid_a",
            nx=4,
            nz=3,
            grid_size=0.5,
            image_size=8,
            sample_rate=SR,
            rir_seconds=0.02,
            num_sources=5,
            dataset="replica",
        ),
        grid_scene(
            "grid_b",
            nx=3,
            nz=3,
            grid_size=0.5,
            blocked=((1, 1),),
            image_size=8,
            sample_rate=SR,
            rir_seconds=0.02,
            dataset="replica",
        ),
    ]
    world = synthetic_world(scenes, sample_rate=SR, dataset="replica")
    episodes = []
    for scene in scenes:
        episodes += generate_scene_episodes(scene, 4, ["chirp", "hum"], seed=len(episodes), first_id=len(episodes))
    root = tmp_path / "soundspaces"
    stats = export_world(world, root, "replica", episodes={("train", "heard"): episodes})
    assert stats.rir_files == (12 * 5 + 8 * 8) * 4 and stats.episodes == 8 and stats.sounds == 2
    assert (root / "metadata/replica/grid_a/source_nodes.txt").exists()
    assert not (root / "metadata/replica/grid_b/source_nodes.txt").exists()
    graph = pickle.loads((root / "metadata/replica/grid_a/graph.pkl").read_bytes())
    assert isinstance(graph, nx.Graph) and len(graph.nodes[0]["point"]) == 3
    rate, data = wavfile.read(root / f"binaural_rirs/replica/grid_a/90/0_{scenes[0].source_nodes[0]}.wav")
    assert rate == SR and data.dtype == np.float32 and data.shape[1] == 2

    cfg = make_cfg(tmp_path, root, sensors=["rgb", "depth", "spectrogram", "pointgoal"], image_size=8)
    imported = load_soundspaces_world(cfg, "train")
    imported_episodes = load_episodes(episode_dataset_path(root, "replica", "train", "heard"))
    for scene in scenes:
        other = imported.scene(scene.name)
        for name in ("positions", "neighbors", "geodesic_hops", "source_nodes", "rgb", "depth"):
            np.testing.assert_array_equal(np.asarray(getattr(other, name)), np.asarray(getattr(scene, name)), name)
    for name in ("chirp", "hum"):
        np.testing.assert_array_equal(imported.sound(name), world.sound(name))

    sensors = ["rgb", "depth", "spectrogram", "pointgoal"]
    env_a = AudioNavEnv(world, episodes, sensors=sensors)
    env_b = AudioNavEnv(imported, imported_episodes, sensors=sensors)
    assert len(env_a.episodes) == len(env_b.episodes)
    rng = np.random.default_rng(0)
    for i in range(len(episodes)):
        obs_a, _ = env_a.reset(options={"episode_index": i})
        obs_b, _ = env_b.reset(options={"episode_index": i})
        assert env_a.episode == env_b.episode
        actions = scripted_actions(env_a.scene, env_a.episode, rng)
        for action in actions:
            for key in sensors:
                np.testing.assert_array_equal(obs_a[key], obs_b[key], key)
            obs_a, r_a, term_a, trunc_a, info_a = env_a.step(action)
            obs_b, r_b, term_b, trunc_b, info_b = env_b.step(action)
            assert (r_a, term_a, trunc_a) == (r_b, term_b, trunc_b)
            assert info_a == info_b
        assert actions[-1] == STOP and info_a["success"] == 1.0

    # the batched env (what training uses) runs on the imported world and agrees with the original
    batched = [
        BatchedAudioNavEnv(w, e, num_envs=2, sensors=sensors, sampler_mode="sequential")
        for w, e in ((world, episodes), (imported, imported_episodes))
    ]
    obs = [b.reset() for b in batched]
    for step in range(6):
        for key in sensors:
            torch.testing.assert_close(obs[0][key], obs[1][key], rtol=0, atol=0)
        actions = np.array([(step % 3) + 1, MOVE_FORWARD])
        results = [b.step(actions) for b in batched]
        obs = [r[0] for r in results]
        torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def test_a_resumed_export_keeps_only_rir_files_of_the_same_making(tmp_path: Path, monkeypatch, caplog):
    """A renderer change (RENDER_VERSION) between an interrupted export and its resume must not leave RIR
    files of both makings side by side."""
    from asgf_nav.tasks import soundspaces_export

    scene = grid_scene("g", 3, 2, grid_size=0.5, sample_rate=44100, image_size=4, rir_seconds=0.01, dataset="replica")
    world = synthetic_world([scene], 44100, dataset="replica")
    record = tmp_path / "metadata/replica/g" / soundspaces_export.RIR_RECORD
    total = export_world(world, tmp_path, "replica").rir_files
    assert json.loads(record.read_text()) == {"source": "unidentified"}
    assert export_world(world, tmp_path, "replica", skip_existing=True).skipped == total
    # files written without a flush can be empty or cut short after a power loss: written again
    wavs = sorted((tmp_path / "binaural_rirs/replica/g").rglob("*.wav"))[:2]
    whole = [wav.read_bytes() for wav in wavs]
    wavs[0].write_bytes(b"")
    wavs[1].write_bytes(whole[1][:-8])
    assert export_world(world, tmp_path, "replica", skip_existing=True).skipped == total - 2
    assert [wav.read_bytes() for wav in wavs] == whole

    made_from = {"source": "baked acoustics", "render_version": 99}
    monkeypatch.setattr(soundspaces_export, "rir_identity", lambda scene: made_from)
    with caplog.at_level(logging.WARNING, logger="asgf_nav.tasks.soundspaces_export"):
        assert export_world(world, tmp_path, "replica", skip_existing=True).skipped == 0
    assert "writing every RIR of g again" in caplog.text
    assert json.loads(record.read_text()) == made_from

    # files without a record (older code, or data from elsewhere) are overwritten, and the record comes
    # only once every file is written: an interrupted export is not mistaken for a finished one
    record.unlink()
    calls, rir = {"n": 0}, scene.rir

    def dies_half_way(*args):
        calls["n"] += 1
        if calls["n"] > total // 2:
            raise KeyboardInterrupt
        return rir(*args)

    monkeypatch.setattr(scene, "rir", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        export_world(world, tmp_path, "replica", skip_existing=True)
    assert not record.exists()
    monkeypatch.setattr(scene, "rir", rir)
    assert export_world(world, tmp_path, "replica", skip_existing=True).skipped == 0
    assert json.loads(record.read_text()) == made_from


def test_views_of_another_size_than_the_config_and_a_scene_count_are_refused(tmp_path: Path, ss_dataset: Path):
    """Both were ignored on SoundSpaces data while the run's config.yaml recorded them: a run saw 6 px views
    recorded as 128 px ones, or every scene of a split recorded as three."""
    from asgf_nav.config import ConfigError

    root = ss_dataset
    size = r"views are 6x6 \(.*office_9.pkl rgb\), not the scenes.image_size=128 .*; set scenes.image_size=6$"
    with pytest.raises(ss.SoundSpacesDataError, match=size):
        load_soundspaces_world(make_cfg(tmp_path, root, image_size=128), "train")
    assert load_soundspaces_world(make_cfg(tmp_path, root, sensors=["spectrogram"], image_size=128), "train")
    counted = make_cfg(tmp_path, root)
    counted.scenes.num_scenes = 3
    with pytest.raises(ConfigError, match=r"^scenes.num_scenes=3 picks among the embedded scene set's scenes"):
        load_soundspaces_world(counted, "train")


def test_views_pickles_of_different_sizes_are_refused_by_name(tmp_path: Path):
    scenes = [
        grid_scene(name, 3, 2, grid_size=0.5, sample_rate=SR, image_size=size, rir_seconds=0.01, dataset="replica")
        for name, size in (("small", 4), ("large", 8))
    ]
    world = synthetic_world(scenes, sample_rate=SR, dataset="replica")
    episodes = []
    for scene in scenes:
        episodes += generate_scene_episodes(scene, 2, ["chirp"], seed=len(episodes), first_id=len(episodes))
    root = tmp_path / "soundspaces"
    export_world(world, root, "replica", episodes={("train", "heard"): episodes})
    cfg = make_cfg(tmp_path, root, sensors=["depth", "spectrogram"])
    with pytest.raises(ss.SoundSpacesDataError, match=r"large.pkl depth: 8x8.*small.pkl depth: 4x4"):
        load_soundspaces_world(cfg, "train")
    cfg = make_cfg(tmp_path, root, sensors=["spectrogram"])  # no views read, nothing to refuse
    assert sorted(load_soundspaces_world(cfg, "train").scenes) == ["large", "small"]


def test_export_refuses_what_soundspaces_cannot_express(tmp_path: Path):
    scene = grid_scene("g", nx=2, nz=2, grid_size=1.0, sample_rate=16000, image_size=4, rir_seconds=0.01)
    with pytest.raises(ExportError, match="44100 Hz"):
        export_world(synthetic_world([scene], 16000), tmp_path, "replica")


def test_task_data_loads_soundspaces_when_found_under_the_data_root(tmp_path: Path, ss_dataset: Path):
    from asgf_nav.tasks.factory import load_task_data

    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"], source="auto")
    cfg.scenes.data_root = str(tmp_path)  # SoundSpaces root defaults to {data_root}/soundspaces
    cfg.scenes.soundspaces_root = None
    cfg.scenes.num_scenes = None
    world, episodes = load_task_data(cfg, "train")
    assert sorted(world.scenes) == ["office_9"] and world.sample_rate == SR
    assert [e.episode_id for e in episodes] == ["0", "1"]


# ------------------------------------------------------------------------------------------------------------
# scripts/export_soundspaces.py
TINY_AUDIO_ACOUSTICS = cheap_acoustics(rays=100, max_rir_seconds=0.05)


@pytest.fixture(scope="module")
def tiny_audio_root(tmp_path_factory) -> Path:
    """The tiny preset's test scene baked with layout and acoustics only (no views), cheaply."""
    return bake_audio_only(tmp_path_factory.mktemp("data"), ["tiny_room_test"], TINY_AUDIO_ACOUSTICS)


def _export(out: Path, *argv: str) -> int:
    import export_soundspaces

    return export_soundspaces.main(["--out", str(out), *argv])


def test_export_script_refuses_a_dataset_of_another_rate_before_loading(tmp_path: Path, capsys):
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as exit_info:
        _export(out, "--dataset", "replica", "--as-dataset", "mp3d", f"scenes.data_root={tmp_path / 'none'}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--as-dataset mp3d needs 16000 Hz RIRs on a 1.0 m grid, but --dataset replica has 44100 Hz" in err
    assert not out.exists()
    with pytest.raises(SystemExit):  # without --dataset the config's scenes.dataset is exported
        _export(out, "--as-dataset", "mp3d", "scenes.dataset=tiny", f"scenes.data_root={tmp_path / 'none'}")
    assert "but --dataset tiny has" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _export(out, "--scenes", "tiny_room_test", "task.test_episodes=3")
    assert "--scenes: 'task.test_episodes=3' looks like a config override" in capsys.readouterr().err


def test_export_script_without_views_exports_scenes_baked_without_views(tmp_path: Path, tiny_audio_root: Path):
    out = tmp_path / "export"
    argv = ["--dataset", "tiny", "--scenes", "tiny_room_test", "--splits", "test", "--sound-splits", "heard"]
    overrides = [f"scenes.data_root={tiny_audio_root}", "task.test_episodes=3", *TINY_AUDIO_ACOUSTICS]
    unbaked = ["--scenes", "tiny_room_test", "tiny_apartment", "--splits", "test", "train"]  # train: not baked
    with pytest.raises(SceneStoreError, match=r"1 of the 1 tiny train scenes are not baked for this task \(tiny_apa"):
        _export(out, "--dataset", "tiny", *unbaked, "--sound-splits", "heard", "--no-views", *overrides)
    assert not out.exists() or not any(out.rglob("*.*")), "the baked test scene was written before the refusal"
    assert _export(out, *argv, "--no-views", *overrides) == 0
    paths = ss.SoundSpacesPaths(out, "replica")
    assert paths.available_scenes() == ["tiny_room_test"]
    assert not paths.observations_file("tiny_room_test").exists()
    assert len(load_episodes(episode_dataset_path(out, "replica", "test", "heard"))) == 3
    world = load_soundspaces_world(make_cfg(tmp_path, out, sensors=["spectrogram"]), "test")
    assert world.scene("tiny_room_test").rgb is None and len(world.scene("tiny_room_test").source_nodes) == 2


def test_store_root_on_soundspaces_data_is_under_the_soundspaces_root(tmp_path, monkeypatch):
    from asgf_nav.config import ExperimentConfig
    from asgf_nav.scenes import soundspaces_import
    from asgf_nav.tasks.factory import spectrogram_store_root

    monkeypatch.setattr(soundspaces_import, "scene_source", lambda cfg: "soundspaces")
    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.soundspaces_root = str(tmp_path / "data"), str(tmp_path / "ss")
    assert spectrogram_store_root(cfg) == tmp_path / "ss" / "spectrograms"


def test_a_soundspaces_splits_sounds_come_from_its_own_episodes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from asgf_nav.config import ExperimentConfig
    from asgf_nav.scenes import soundspaces_import
    from asgf_nav.tasks import factory

    monkeypatch.setattr(soundspaces_import, "scene_source", lambda cfg: "soundspaces")
    monkeypatch.setattr(
        factory,
        "load_or_generate",
        lambda root, world, split, *a, generate: [  # SoundSpaces' own files are read, never generated or written
            SimpleNamespace(sound={"train": "telephone", "val": "fan", "test": "siren"}[split] if not generate else "")
        ],
    )
    cfg = ExperimentConfig()
    assert [factory.split_sound_names(cfg, s, None) for s in ("train", "val", "test")] == [
        ["telephone"],
        ["fan"],
        ["siren"],
    ]


def test_points_txt_columns_1_to_3_are_mesh_xyz(tmp_path: Path) -> None:
    path = tmp_path / "points.txt"
    path.write_text("0\t1.0\t2.0\t3.0\n1\t-4.0\t5.0\t6.5\n")
    np.testing.assert_allclose(
        ss.read_points(path, "replica"),
        [[1.0, 3.0 - REPLICA_OFFSET, -2.0], [-4.0, 6.5 - REPLICA_OFFSET, -5.0]],
    )


@pytest.mark.parametrize("first", [1, 2])
def test_move_forward_goes_to_the_first_neighbour_in_that_direction(first: int) -> None:
    graph = nx.Graph()
    points = {0: (0.0, 0.0, 0.0), 1: (0.5, 0.0, 0.0), 2: (1.0, 0.0, 0.004)}  # 1 and 2 both round to +X
    for n, p in points.items():
        graph.add_node(n, point=p)
    graph.add_edge(0, first)
    graph.add_edge(0, 3 - first)
    layout = ss.graph_layout(graph, np.zeros((0, 3)), Path("graph.pkl"))
    assert layout.neighbors[0, 3] == first  # yaw 270 faces +X; SoundSpaces takes the first match


def test_normalised_depth_reaching_exactly_1_is_scaled_to_metres(tmp_path: Path) -> None:
    """Every view that sees past 10 m holds normalised depth 1.0 exactly (habitat clips, then divides)."""
    frames = {}
    for yaw in (0, 90, 180, 270):
        depth = np.full((4, 4, 1), 0.25, dtype=np.float32)
        depth[0, 0] = 1.0  # clipped at 10 m
        frames[(0, yaw)] = ss.SensorSuiteObservations(rgb=np.zeros((4, 4, 3), np.uint8), depth=depth)
    path = tmp_path / "views.pkl"
    path.write_bytes(pickle.dumps(frames))
    _, depth = ss.read_observations(path, np.array([0]))
    assert float(depth[0, 0, 0, 0]) == pytest.approx(10.0) and float(depth[0, 0, 1, 1]) == pytest.approx(2.5)


def test_one_view_under_many_keys_is_refused_before_it_fills_them(tmp_path: Path) -> None:
    """A pickle refers to one view again for a few bytes: under 3,200 keys one 500x500 view (1.25 MB of file) took
    3 GB, a float32 copy of its depth per key to tell normalised depth, then a copy per node. SoundSpaces renders
    each view on its own; one given twice is an error naming both keys, and its depth is read once."""
    import tracemalloc

    view = ss.SensorSuiteObservations(rgb=np.zeros((500, 500, 3), np.uint8), depth=np.zeros((500, 500), np.float16))
    frames = {(node, yaw): view for node in range(800) for yaw in (0, 90, 180, 270)}
    path = tmp_path / "views.pkl"
    path.write_bytes(pickle.dumps(frames, protocol=2))
    assert path.stat().st_size < 1_400_000
    tracemalloc.start()
    with pytest.raises(
        ss.SoundSpacesDataError, match=r"views\.pkl gives \(node 0, yaw 90\) the very view of \(node 0, yaw 0\)"
    ):
        try:
            ss.read_observations(path, np.arange(800))
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peak < 100e6, f"{peak / 1e6:.0f} MB"  # numpy's arrays are traced too


def test_depth_holding_nan_is_refused_naming_the_view(tmp_path: Path) -> None:
    """The depth clamp lets nan through to the policy, which failed at its first action naming nothing."""
    frames = {(0, yaw): {"rgb": np.zeros((4, 4, 3), np.uint8), "depth": np.full((4, 4), 2.0, np.float32)}
              for yaw in (0, 90, 180, 270)}  # fmt: skip
    frames[(0, 180)]["depth"][1, 2] = np.nan
    path = tmp_path / "views.pkl"
    path.write_bytes(pickle.dumps(frames))
    with pytest.raises(ss.SoundSpacesDataError, match=r"views\.pkl view \(node 0, yaw 180\): depth holds nan in 1 pix"):
        ss.read_observations(path, np.array([0]))


def test_reimported_layout_drops_the_views_of_the_old_node_list(tmp_path: Path) -> None:
    from asgf_nav.scenes import soundspaces_import as ssi
    from asgf_nav.scenes.store import SceneStore

    root = tmp_path / "ss"
    write_soundspaces_dataset(root)
    paths = ss.SoundSpacesPaths(root, "replica")
    directory = ssi.import_scene(paths, tmp_path / "data", "office_9")
    graph = pickle.loads(paths.graph_file("office_9").read_bytes())
    graph.remove_node(0)  # node ids now 1, 2, 3, 5, 6, 7, 8; the views pickle is unchanged
    paths.graph_file("office_9").write_bytes(pickle.dumps(graph))
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    rgb = SceneStore(directory).array("rgb")
    assert rgb.shape[0] == 7
    assert [int(rgb[i, 0, 0, 0, 0]) for i in range(7)] == [1, 2, 3, 5, 6, 7, 8]  # red channel = node id


# ------------------------------------------------------------------------------------------------------------
# Readers: what a damaged or unusual SoundSpaces file must not slip through as
def test_points_txt_with_fewer_than_4_columns_is_refused_by_name(tmp_path: Path) -> None:
    """Three rows of 3 columns would otherwise reshape silently into two wrong positions."""
    path = tmp_path / "points.txt"
    path.write_text("0\t1.0\t2.0\n1\t3.0\t4.0\n2\t5.0\t6.0\n")
    with pytest.raises(ss.SoundSpacesDataError, match=r"points\.txt, line 1: 3 tab-separated columns, not 4"):
        ss.read_points(path, "replica")
    # numpy counted a bad value's row from 0 and a short row's from 1: lines as an editor numbers them
    for text, message in [
        ("0\t1\t2\t3\n\n1\t4\t5\t6\n2\tabc\t5\t6\n", r"line 4: could not convert string to float: 'abc'"),
        ("0\t1\t2\t3\n1\t4\t5\n", r"line 2: 3 tab-separated columns"),
        ("\n\n", r"holds no point; extract the scene's metadata folder again"),
    ]:
        path.write_text(text)
        with pytest.raises(ss.SoundSpacesDataError, match=message):
            ss.read_points(path, "replica")


def test_graph_with_a_negative_node_id_is_refused_by_name(tmp_path: Path) -> None:
    """Node ids are points.txt rows: -1 would read the last row's position."""
    graph = nx.Graph()
    graph.add_node(0, point=(0.0, 0.0, 0.0))
    graph.add_node(-1, point=(0.5, 0.0, 0.0))
    graph.add_edge(0, -1)
    path = tmp_path / "graph.pkl"
    path.write_bytes(pickle.dumps(graph))
    with pytest.raises(ss.SoundSpacesDataError, match=r"graph\.pkl has non-integer node ids, e\.g\. \[-1\]"):
        ss.read_graph(path)


class _RunsACommand:
    """Unpickles as a call of ``os.system``: what a malicious pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_graphs_are_read_as_data_at_every_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    """SoundSpaces' graphs (networkx, numpy or tuple points) load whatever protocol wrote them; numpy arrays
    too, including protocol 5's out-of-band form."""
    graph = nx.Graph()
    graph.add_node(0, point=np.array([0.0, 0.1, 0.2]))
    graph.add_node(1, point=(0.5, 0.0, np.float32(1.5)))
    graph.add_edge(0, 1, weight=0.5)
    path = tmp_path / "graph.pkl"
    path.write_bytes(pickle.dumps(graph, protocol=protocol))
    read = ss.read_graph(path)
    assert sorted(read.edges(data=True)) == [(0, 1, {"weight": 0.5})]
    np.testing.assert_array_equal(read.nodes[0]["point"], [0.0, 0.1, 0.2])
    assert read.nodes[1]["point"] == (0.5, 0.0, np.float32(1.5))


def test_a_graph_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    """A pickle is a program: one naming os.system is refused by name, and the command never runs."""
    marker = tmp_path / "ran"
    graph = nx.Graph()
    graph.add_node(0, point=(0.0, 0.0, 0.0), payload=_RunsACommand(marker))
    path = tmp_path / "graph.pkl"
    path.write_bytes(pickle.dumps(graph))
    with pytest.raises(ss.SoundSpacesDataError, match=r"graph\.pkl is not a networkx graph of numbers: .*system"):
        ss.read_graph(path)
    views = tmp_path / "views.pkl"
    views.write_bytes(pickle.dumps({(0, 0): {"rgb": _RunsACommand(marker)}}))
    with pytest.raises(ss.SoundSpacesDataError, match=r"views\.pkl hold more than views: .*system"):
        ss.read_observations(views, np.array([0]))
    assert not marker.exists()
    functions = tmp_path / "function.pkl"  # networkx classes are data, its functions are not
    functions.write_bytes(pickle.dumps(nx.freeze))
    with pytest.raises(ss.SoundSpacesDataError, match=r"networkx\.classes\.function\.freeze"):
        ss.read_graph(functions)
    for module, name in (("networkx.classes.function", "Counter"), ("networkx.classes.graph", "__class__")):
        functions.write_bytes(b"\x80\x04c" + f"{module}\n{name}\n".encode() + b"q\x00.")  # GLOBAL: a class it imports
        with pytest.raises(ss.SoundSpacesDataError, match=rf"{module}\.{name}"):
            ss.read_graph(functions)


def test_source_node_list_is_sorted_indices_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    """Ids listed in any order map to sorted project indices; an id the graph lacks names the file."""
    node_ids = np.array([0, 1, 2, 3, 5, 6, 7, 8])
    path = tmp_path / "source_nodes.txt"
    path.write_text("7\n0\n3\n")
    np.testing.assert_array_equal(ss.read_source_nodes(path, node_ids), [0, 3, 6])
    path.write_text("0\n4\n")
    with pytest.raises(ss.SoundSpacesDataError, match=r"source_nodes\.txt names nodes not in the graph: \[4\]"):
        ss.read_source_nodes(path, node_ids)
    path.write_text("3\n7\n3\n")
    with pytest.raises(ss.SoundSpacesDataError, match=r"source_nodes\.txt repeats nodes: \[3\]"):
        ss.read_source_nodes(path, node_ids)
    path.write_text("")
    with pytest.raises(ss.SoundSpacesDataError, match=r"source_nodes\.txt is empty"):
        ss.read_source_nodes(path, node_ids)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ("one_row", r"view \(node 8, yaw 90\) is \(1, 6\), other views \(6, 6\)"),  # would broadcast silently
        ("float_rgb", r"view \(node 8, yaw 90\): rgb must be \(H, W, 3\|4\) uint8"),
        ("one_row_depth", r"view \(node 8, yaw 90\): .* got rgb uint8\(6, 6, 4\) and depth \(1, 6\)"),  # broadcast
    ],
)
def test_views_of_another_size_or_type_are_refused_naming_the_view(ss_dataset: Path, change: str, pattern: str) -> None:
    """One view 1 pixel high, float rgb, or a depth image smaller than its rgb is an error naming the view."""
    path = ss_dataset / "scene_observations" / "replica" / "office_9.pkl"
    frames = pickle.loads(path.read_bytes())
    view = frames[(8, 90)]
    if change == "one_row":
        frames[(8, 90)] = {"rgb": view["rgb"][:1], "depth": view["depth"][:1]}
    elif change == "one_row_depth":
        frames[(8, 90)] = {"rgb": view["rgb"], "depth": view["depth"][:1]}
    else:
        frames[(8, 90)] = {"rgb": view["rgb"].astype(np.float32), "depth": view["depth"]}
    path.write_bytes(pickle.dumps(frames))
    with pytest.raises(ss.SoundSpacesDataError, match=r"office_9\.pkl " + pattern):
        ss.read_observations(path, np.array(sorted(CELLS)))


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (np.zeros((300, 4), dtype=np.float32), r"must have 2 channels, got shape \(300, 4\)"),
        (np.ones((300, 2), dtype=np.int16), r"holds int16 samples; SoundSpaces RIRs are float32"),
        (np.full((300, 2), np.nan, dtype=np.float32), r"holds non-finite samples"),
    ],
)
def test_rir_files_of_the_wrong_shape_type_or_values_are_refused_by_name(
    tmp_path: Path, data: np.ndarray, pattern: str
) -> None:
    """A 4-channel, integer or NaN RIR is an error naming the file, not a wrong observation."""
    path = tmp_path / "0" / "7_5.wav"
    path.parent.mkdir()
    wavfile.write(path, SR, data)
    with pytest.raises(ss.SoundSpacesDataError, match=r"0/7_5\.wav " + pattern):
        ss.read_rir(path, SR)


def test_rir_cache_evicts_the_least_recently_used_and_reads_it_again(tmp_path: Path) -> None:
    """A cache with room for two RIRs holds two: a third evicts the least recently used, read again later."""
    paths = ss.SoundSpacesPaths(tmp_path, "replica")
    for s in range(3):
        f = paths.rir_file("sc", 0, s, 0)
        f.parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(f, SR, np.full((300, 2), s, dtype=np.float32))
    rirs = ss.SoundSpacesRirs(paths, "sc", np.arange(3), np.arange(3), cache_bytes=2 * 300 * 2 * 4)
    rirs.rir(0, 0, 0), rirs.rir(0, 1, 0), rirs.rir(0, 0, 0)  # A, B, A again (a hit)
    rirs.rir(0, 2, 0)  # C evicts the least recently used: B
    assert rirs.reads == 3
    np.testing.assert_array_equal(rirs.rir(0, 0, 0), np.zeros((300, 2), dtype=np.float32))
    assert rirs.reads == 3, "A was used more recently than B and must still be cached"
    np.testing.assert_array_equal(rirs.rir(0, 1, 0), np.ones((300, 2), dtype=np.float32))
    assert rirs.reads == 4, "B must have been evicted to keep the cache within cache_bytes"


def test_sounds_are_resampled_to_the_rir_rate(ss_dataset: Path) -> None:
    """The 22050 Hz telephone sound (a 440 Hz sine) is one second at 44100 Hz, still at 440 Hz."""
    wave = ss.SoundSpacesSounds(ss_dataset / "sounds" / "1s_all", SR)("telephone")
    assert wave.shape == (SR,) and wave.dtype == np.float32
    peak_hz = int(np.argmax(np.abs(np.fft.rfft(wave)))) * SR / len(wave)
    assert peak_hz == pytest.approx(440.0, abs=1.0)


# ------------------------------------------------------------------------------------------------------------
# Importer: when the scene store is rewritten
def _record_stage_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stage names the importer writes from now on, in order."""
    written: list[str] = []
    write_stage = ssi.write_stage

    def recording(directory, stage, *args, **kwargs):
        written.append(stage)
        return write_stage(directory, stage, *args, **kwargs)

    monkeypatch.setattr(ssi, "write_stage", recording)
    return written


def test_forced_or_version_bumped_imports_rewrite_both_stages(
    tmp_path: Path, ss_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """force=True, or stores made by an older IMPORT_VERSION, are imported again; up to date ones are not."""
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    written = _record_stage_writes(monkeypatch)
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert written == []
    ssi.import_scene(paths, tmp_path / "data", "office_9", force=True)
    assert written == ["layout", "vision"]
    monkeypatch.setattr(ssi, "IMPORT_VERSION", ssi.IMPORT_VERSION + 1)
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert written == ["layout", "vision"] * 2


def test_a_same_size_edit_of_the_graph_is_imported_again(tmp_path: Path, ss_dataset: Path) -> None:
    """A moved node pickles to the same number of bytes: its newer modification time triggers the re-import."""
    import os

    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    graph_file = paths.graph_file("office_9")
    graph = pickle.loads(graph_file.read_bytes())
    graph_file.write_bytes(pickle.dumps(graph))  # pickled as the edit below will be
    directory = ssi.import_scene(paths, tmp_path / "data", "office_9")
    before = graph_file.stat()
    graph.add_node(0, point=(1.25, *node_point(0)[1:]))  # graph.nodes would pickle a cached view too
    graph_file.write_bytes(pickle.dumps(graph))
    os.utime(graph_file, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert graph_file.stat().st_size == before.st_size
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert float(SceneStore(directory).array("positions")[0, 0]) == 1.25


def test_a_copy_of_the_download_with_new_times_is_not_imported_again(
    tmp_path: Path, ss_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cp -r (or rsync without -t) to a node's scratch disk gives every file a new modification time: the
    same bytes must not be imported again, which a read-only shared store would refuse outright; a store
    recorded before digests were kept still serves while the times agree."""
    import json
    import os
    import shutil

    directory = ssi.import_scene(ss.SoundSpacesPaths(ss_dataset, "replica"), tmp_path / "data", "office_9")
    copy = tmp_path / "scratch"
    shutil.copytree(ss_dataset, copy, copy_function=shutil.copyfile)  # contents only, as cp -r
    paths = ss.SoundSpacesPaths(copy, "replica")
    for path in filter(Path.exists, (*ssi._layout_files(paths, "office_9"), paths.observations_file("office_9"))):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    written = _record_stage_writes(monkeypatch)
    hashed = []
    file_sha256 = ssi._file_sha256
    monkeypatch.setattr(ssi, "_file_sha256", lambda path: hashed.append(path.name) or file_sha256(path))
    assert ssi.import_scene(paths, tmp_path / "data", "office_9") == directory
    assert written == [] and "office_9.pkl" in hashed  # the views compared by their bytes ...
    hashed.clear()
    assert ssi.import_scene(paths, tmp_path / "data", "office_9") == directory
    assert written == [] and hashed == []  # ... once: their times were recorded (the store can be written)
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["stages"].values():  # as an earlier release recorded them: [size, time]
        entry["meta"]["fingerprint"] = {name: fp[:2] for name, fp in entry["meta"]["fingerprint"].items()}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert written == []
    ssi.import_scene(ss.SoundSpacesPaths(ss_dataset, "replica"), tmp_path / "data", "office_9")
    assert written == ["layout", "vision"]  # other times and no digest to compare them by: imported


def test_changed_or_removed_views_pickle_is_followed_by_the_store(tmp_path: Path, ss_dataset: Path) -> None:
    """New views replace the stored ones; views deleted from the download are dropped from the store."""
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    directory = ssi.import_scene(paths, tmp_path / "data", "office_9")
    obs = paths.observations_file("office_9")
    frames = pickle.loads(obs.read_bytes())
    frames[(0, 0)]["rgb"][..., 0] = 99
    obs.write_bytes(pickle.dumps(frames))
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert int(SceneStore(directory).array("rgb")[0, 0, 0, 0, 0]) == 99
    obs.unlink()
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    assert not SceneStore(directory).has_stage("vision")


def test_misspelt_scene_source_is_refused(tmp_path: Path, ss_dataset: Path) -> None:
    """scenes.source=soundspace (a typo) is an error, not silently 'auto'."""
    with pytest.raises(ss.SoundSpacesDataError, match=r"auto, embedded or soundspaces, got 'soundspace'"):
        ssi.scene_source(make_cfg(tmp_path, ss_dataset, source="soundspace"))


# ------------------------------------------------------------------------------------------------------------
# World: which scenes of a split are loaded
def test_a_split_scene_without_its_rir_folder_is_left_out_and_refused_when_named(
    tmp_path: Path, ss_dataset: Path
) -> None:
    """Metadata alone is not a download: the split runs on the other scenes; naming it says what is missing."""
    write_soundspaces_dataset(ss_dataset, "office_7")
    shutil.rmtree(ss_dataset / "binaural_rirs" / "replica" / "office_7")
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])
    assert sorted(load_soundspaces_world(cfg, "train").scenes) == ["office_9"]
    missing = r"\['office_7'\] are not downloaded.*binaural_rirs/replica/office_7"
    with pytest.raises(ss.SoundSpacesDataError, match=missing):
        load_soundspaces_world(cfg, "train", ["office_7"])


def test_ddppo_ranks_on_soundspaces_data_each_load_their_share_of_the_training_scenes(
    tmp_path: Path, ss_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rank used to load every downloaded training scene (views, episodes, an RIR cache per scene),
    where the embedded scenes are shared out: eight GPUs held eight copies of an MP3D split."""
    from asgf_nav.config import load_config
    from asgf_nav.experiment import make_rank_env
    from asgf_nav.rl import distributed

    write_soundspaces_dataset(ss_dataset, "office_7")
    cfg = load_config(
        "replica_heard",
        [f"scenes.soundspaces_root={ss_dataset}", f"scenes.data_root={tmp_path / 'data'}", "scenes.image_size=6",
         f"train.run_dir={tmp_path / 'run'}", "ppo.num_envs=1", "task.spectrogram_store=''", "train.device=cpu"],
    )  # fmt: skip
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    envs = [make_rank_env(cfg, "train", rank) for rank in (0, 1)]
    assert [sorted(env.world.scenes) for env in envs] == [["office_7"], ["office_9"]]
    assert [{e.scene for e in env.episodes} for env in envs] == [{"office_7"}, {"office_9"}]
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    assert sorted(make_rank_env(cfg, "train", 0).world.scenes) == ["office_7", "office_9"]


def test_split_scenes_come_from_the_split_file_when_content_is_empty(tmp_path: Path, ss_dataset: Path) -> None:
    """An empty content/ folder next to a split file that holds the episodes itself: the scenes are its episodes'."""
    split_dir = ss_dataset / "datasets" / "audionav" / "replica" / "v1" / "train_telephone"
    content = split_dir / "content" / "office_9.json.gz"
    with gzip.open(content, "rt") as f:
        records = json.load(f)
    content.unlink()
    with gzip.open(split_dir / "train_telephone.json.gz", "wt") as f:
        json.dump(records, f)
    world = load_soundspaces_world(make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"]), "train")
    assert sorted(world.scenes) == ["office_9"]


# ------------------------------------------------------------------------------------------------------------
# Readers: graph positions and directions, source lists, RIR and sound files
def test_a_scene_without_points_txt_is_not_downloaded(ss_dataset: Path) -> None:
    """A scene whose graph and RIRs are there but whose points.txt is not is no usable download."""
    write_soundspaces_dataset(ss_dataset, "office_7")
    (ss_dataset / "metadata" / "replica" / "office_7" / "points.txt").unlink()
    assert ss.SoundSpacesPaths(ss_dataset, "replica").available_scenes() == ["office_9"]


def test_a_graph_without_nodes_is_refused_by_name(tmp_path: Path) -> None:
    """An empty graph.pkl (a failed SoundSpaces preprocessing) is an error naming the file, not a 0-node scene."""
    path = tmp_path / "graph.pkl"
    path.write_bytes(pickle.dumps(nx.Graph()))
    with pytest.raises(ss.SoundSpacesDataError, match=r"graph\.pkl has no nodes"):
        ss.read_graph(path)


def test_nodes_without_a_point_take_the_points_txt_row_of_their_node_id() -> None:
    """Node ids are points.txt rows: node 2, the second node, takes row 2, not row 1."""
    graph = nx.Graph()
    graph.add_edge(0, 2)  # no 'point' attributes
    points = np.array([(0.0, 0.0, 0.0), (9.0, 9.0, 9.0), (0.5, 0.0, 0.0)])
    layout = ss.graph_layout(graph, points, Path("graph.pkl"))
    np.testing.assert_array_equal(layout.positions, [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0)])
    assert layout.neighbors[0].tolist() == [-1, -1, -1, 1]  # node 2 lies at +X: yaw 270


def test_a_node_with_no_point_and_no_points_txt_row_is_refused_by_name() -> None:
    """Node 5 of a 3-row points.txt without a 'point' has no position: an error, not the origin."""
    graph = nx.Graph()
    graph.add_node(0, point=(0.0, 0.0, 0.0))
    graph.add_edge(0, 5)
    with pytest.raises(ss.SoundSpacesDataError, match=r"node 5 of graph\.pkl has no 'point' .* \(3 rows\)"):
        ss.graph_layout(graph, np.zeros((3, 3)), Path("graph.pkl"))


def test_move_forward_rounds_a_direction_off_by_float_noise_to_the_nearest_degree() -> None:
    """Neighbours 1 um off an axis lie at 89.9999, 179.9999 and -89.9999 degrees: rounded, each is reached."""
    graph = nx.Graph()
    graph.add_node(0, point=(0.0, 0.0, 0.0))
    offsets = {1: (1e-6, 0.0, 0.5), 2: (0.5, 0.0, 1e-6), 3: (1e-6, 0.0, -0.5), 4: (-0.5, 0.0, 1e-6)}
    for node, point in offsets.items():
        graph.add_node(node, point=point)
        graph.add_edge(0, node)
    layout = ss.graph_layout(graph, np.zeros((0, 3)), Path("graph.pkl"))
    # yaw 0 faces -Z (node 3), 90 faces -X (node 4), 180 faces +Z (node 1), 270 faces +X (node 2)
    assert layout.neighbors[0].tolist() == [3, 4, 1, 2]


def test_a_source_node_list_of_one_id_is_read(tmp_path: Path) -> None:
    """A scene with a single sound source lists one id: node 5 is project index 4 when node 4 is missing."""
    path = tmp_path / "source_nodes.txt"
    path.write_text("5\n")
    np.testing.assert_array_equal(ss.read_source_nodes(path, np.array([0, 1, 2, 3, 5, 6, 7, 8])), [4])


def test_a_float64_rir_file_is_read_as_float32(tmp_path: Path) -> None:
    """A float64 RIR wav gives the same float32 (L, 2) array every other RIR is."""
    path = tmp_path / "7_5.wav"
    data = np.array([[0.5, -0.25], [0.125, 1.0], [0.0, -1.0]])
    wavfile.write(path, SR, data)
    rir = ss.read_rir(path, SR)
    assert rir.dtype == np.float32
    np.testing.assert_array_equal(rir, [[0.5, -0.25], [0.125, 1.0], [0.0, -1.0]])


def _three_rir_files(tmp_path: Path) -> ss.SoundSpacesPaths:
    """RIRs 0_s.wav at azimuth 0 for sources s = 0, 1, 2, each 300 samples of the value s."""
    paths = ss.SoundSpacesPaths(tmp_path, "replica")
    for s in range(3):
        f = paths.rir_file("sc", 0, s, 0)
        f.parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(f, SR, np.full((300, 2), s, dtype=np.float32))
    return paths


def test_cached_rirs_are_read_only(tmp_path: Path) -> None:
    """A caller writing into a returned RIR would change what every later step hears: the write is refused."""
    rirs = ss.SoundSpacesRirs(_three_rir_files(tmp_path), "sc", np.arange(3), np.arange(3))
    rir = rirs.rir(0, 1, 0)
    with pytest.raises(ValueError, match="read-only"):
        rir[0, 0] = 5.0
    np.testing.assert_array_equal(rirs.rir(0, 1, 0), np.ones((300, 2), dtype=np.float32))


def test_a_cache_smaller_than_one_rir_still_keeps_the_latest(tmp_path: Path) -> None:
    """With a share below one RIR (many scenes, a small rir_cache_mb) a repeated read is still a cache hit."""
    rirs = ss.SoundSpacesRirs(_three_rir_files(tmp_path), "sc", np.arange(3), np.arange(3), cache_bytes=1)
    rirs.rir(0, 1, 0), rirs.rir(0, 1, 0)
    assert rirs.reads == 1
    rirs.rir(0, 2, 0), rirs.rir(0, 1, 0)  # the newer RIR replaces the older one
    assert rirs.reads == 3


def test_a_stereo_sound_is_mixed_down_to_the_mean_of_its_channels(tmp_path: Path) -> None:
    """Sounds are mono, as SoundSpaces loads them: a stereo file (0.4 and 0.2 times a sine) gives 0.3 times it."""
    sine = np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    sf.write(tmp_path / "duet.wav", np.stack([0.4 * sine, 0.2 * sine], axis=1), SR, subtype="FLOAT")
    wave = ss.SoundSpacesSounds(tmp_path, SR)("duet")
    assert wave.shape == (SR,)
    np.testing.assert_allclose(wave, 0.3 * sine, atol=1e-6)


def test_files_cut_short_anywhere_are_refused_with_the_remedy(tmp_path: Path) -> None:
    """An RIR cut part-way through a frame (scipy: 'cannot reshape array') and a sound cut short (which librosa
    reads without a word, as 230 samples instead of 1 s) are errors naming the file; an RIR's says what to do."""
    rir_path, sound_dir = tmp_path / "0_1.wav", tmp_path / "1s_all"
    sound_dir.mkdir()
    wavfile.write(rir_path, SR, np.ones((SR, 2), dtype=np.float32))
    rir_path.write_bytes(rir_path.read_bytes()[:100_000])  # 24989 float samples: not a whole number of frames
    with pytest.raises(ss.SoundSpacesDataError, match=r"0_1\.wav is unreadable.*part-way through a frame.*"
                       r"binaural_rirs folder again.*rir_on_missing=silence"):  # fmt: skip
        ss.read_rir(rir_path, SR)
    wavfile.write(sound_dir / "bell.wav", SR, (np.sin(np.arange(SR) / 5) * 10000).astype(np.int16))
    (sound_dir / "bell.wav").write_bytes((sound_dir / "bell.wav").read_bytes()[:1000])
    with pytest.raises(ss.SoundSpacesDataError, match=r"1s_all/bell\.wav is unreadable.*cut short"):
        ss.SoundSpacesSounds(sound_dir, SR)("bell")


def test_an_empty_sound_file_is_refused_by_name(tmp_path: Path) -> None:
    """A 0-sample sound would make every episode silent: an error naming the file."""
    (tmp_path / "1s_all").mkdir()
    sf.write(tmp_path / "1s_all" / "hush.wav", np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(ss.SoundSpacesDataError, match=r"1s_all/hush\.wav is empty"):
        ss.SoundSpacesSounds(tmp_path / "1s_all", SR)("hush")


def test_a_graph_whose_tables_are_not_dicts_is_refused(tmp_path: Path) -> None:
    """networkx writes its node and adjacency tables as dicts; a list, from a file made elsewhere, would make each
    lookup of the import a scan."""
    graph = nx.path_graph(3)
    graph._adj = [0, 1, 2]
    (tmp_path / "graph.pkl").write_bytes(pickle.dumps(graph, protocol=4))
    with pytest.raises(ss.SoundSpacesDataError, match=r"graph.pkl holds a networkx graph whose tables are not dicts "
                       r"\(\{'_adj': 'list'\}\)"):  # fmt: skip
        ss.read_graph(tmp_path / "graph.pkl")
    (tmp_path / "fine.pkl").write_bytes(pickle.dumps(nx.path_graph(3), protocol=4))
    assert ss.read_graph(tmp_path / "fine.pkl").number_of_nodes() == 3


def test_nested_lists_and_shared_rows_from_a_pickle_are_refused_before_they_grow(tmp_path: Path) -> None:
    """Lists shared through a pickle's memo cost a few bytes each: a 'point' of [[[0] * 600] * 600] * 600 (3.7 kB)
    made a 1.7 GB array before its shape was checked, so did views given as nested lists, and one adjacency row
    given to 2,000 nodes (29 kB) made 2 million edges for the import to walk."""
    row = [0] * 600
    graph = nx.Graph()
    graph.add_node(0, point=[[row] * 600] * 600)
    (tmp_path / "point.pkl").write_bytes(pickle.dumps(graph, protocol=4))
    with pytest.raises(ss.SoundSpacesDataError, match=r"node 0 of .*point.pkl has a 'point' of no three coordinates"):
        ss.graph_layout(ss.read_graph(tmp_path / "point.pkl"), np.zeros((1, 3)), tmp_path / "point.pkl")
    shared = {j: {} for j in range(2_000)}
    rows = nx.Graph()
    rows._node, rows._adj = {i: {"point": [0.0, 0.0, 0.0]} for i in range(2_000)}, {i: shared for i in range(2_000)}
    (tmp_path / "rows.pkl").write_bytes(pickle.dumps(rows, protocol=4))
    with pytest.raises(ss.SoundSpacesDataError, match=r"rows.pkl gives several nodes one adjacency row"):
        ss.read_graph(tmp_path / "rows.pkl")
    frames = {(0, yaw): {"rgb": [[row] * 600] * 600, "depth": []} for yaw in (0, 90, 180, 270)}
    (tmp_path / "views.pkl").write_bytes(pickle.dumps(frames, protocol=4))
    with pytest.raises(ss.SoundSpacesDataError, match=r"views.pkl hold more than views: its \d+ containers are "
                       r"reached \d+ times"):  # fmt: skip
        ss.read_observations(tmp_path / "views.pkl", np.array([0]))
    frames = {(0, yaw): {"rgb": [[[0, 0, 0]]], "depth": [[0.0]]} for yaw in (0, 90, 180, 270)}  # lists, not shared
    (tmp_path / "lists.pkl").write_bytes(pickle.dumps(frames, protocol=4))
    with pytest.raises(ss.SoundSpacesDataError, match=r"lists.pkl view \(node 0, yaw 0\) holds rgb list and depth "
                       r"list, not numpy arrays"):  # fmt: skip
        ss.read_observations(tmp_path / "lists.pkl", np.array([0]))


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_a_sound_that_is_not_one_second_is_refused_by_name(tmp_path: Path, seconds: float) -> None:
    """SoundSpaces plays the next second of a longer sound at each new pose (and divides by zero on a shorter one):
    only one-second sounds are heard as SoundSpaces hears them, and the first second of another is not passed off."""
    (tmp_path / "1s_all").mkdir()
    sf.write(tmp_path / "1s_all" / "long.wav", np.ones(int(seconds * 22050), dtype=np.float32) * 0.1, 22050)
    with pytest.raises(ss.SoundSpacesDataError, match=rf"1s_all/long\.wav lasts {seconds:.3f} s .*not one second"):
        ss.SoundSpacesSounds(tmp_path / "1s_all", SR)("long")


# ------------------------------------------------------------------------------------------------------------
# Importer and data source: what is imported, and when
def test_the_rir_check_reads_distinct_files_and_names_each_bad_one_once(tmp_path: Path, ss_dataset: Path) -> None:
    """--check-rirs N drew with replacement: asked for more files than a scene has, it read some several
    times, reported one missing file five times and still never read every file."""
    import import_soundspaces

    from asgf_nav.scenes.scene import Scene

    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    scene = Scene(ssi.import_scene(paths, tmp_path / "data", "office_9"))
    (ss_dataset / "binaural_rirs" / "replica" / "office_9" / "90" / "3_5.wav").unlink()
    total = scene.num_nodes * len(scene.store.array("source_nodes")) * 4
    checked, errors = import_soundspaces.check_rirs(paths, scene, samples=10 * total)
    assert checked == total and len(errors) == 1 and "90/3_5.wav does not exist" in errors[0]
    checked, errors = import_soundspaces.check_rirs(paths, scene, samples=5)
    assert checked == 5


def test_the_rir_check_names_five_bad_files_of_a_scene_and_counts_the_rest(
    tmp_path: Path, ss_dataset: Path, capsys
) -> None:
    """A badly damaged download: the log names the first files and says how many more are bad, so re-extracting
    the named ones is not mistaken for the whole repair."""
    import import_soundspaces

    rirs = sorted((ss_dataset / "binaural_rirs" / "replica" / "office_9" / "90").glob("*.wav"))
    assert len(rirs) > import_soundspaces.NAMED_BAD_FILES + 2
    for rir in rirs:
        rir.unlink()
    argv = ["--root", str(ss_dataset), "--dataset", "replica", "--data-root", str(tmp_path / "data")]
    assert import_soundspaces.main([*argv, "--scenes", "office_9", "--check-rirs", "100000"]) == 1
    said = capsys.readouterr().err  # the script's own log handler
    assert said.count("does not exist") == import_soundspaces.NAMED_BAD_FILES
    more = len(rirs) - import_soundspaces.NAMED_BAD_FILES
    assert f"office_9: {more} more bad RIR files, not named" in said


def test_a_partial_test_split_is_a_warning_and_hidden_files_are_no_scenes(tmp_path: Path, caplog, monkeypatch) -> None:
    """Test results with scenes missing do not compare with the papers': a warning, not an info line. A macOS
    '._' companion file in content/ is not a scene that is missing."""
    from asgf_nav.tasks.soundspaces_world import downloaded_split_scenes

    paths = ss.SoundSpacesPaths(tmp_path, "replica")
    for split in ("val", "test"):
        content = episode_dataset_path(tmp_path, "replica", split, "heard").parent / "content"
        content.mkdir(parents=True)
        for name in ("office_9", "room_0", "._office_9"):
            (content / f"{name}.json.gz").write_bytes(b"")
    monkeypatch.setattr(ss.SoundSpacesPaths, "available_scenes", lambda self: ["office_9"])
    with caplog.at_level(logging.INFO, logger="asgf_nav.tasks.soundspaces_world"):
        assert downloaded_split_scenes(paths, "val", "heard") == ["office_9"]
        assert downloaded_split_scenes(paths, "test", "heard") == ["office_9"]
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]  # val, then test
    ending = "using the 1 downloaded scenes of 2 (['room_0'] missing)"
    assert all(r.getMessage().endswith(ending) for r in caplog.records)
    monkeypatch.setattr(ss.SoundSpacesPaths, "available_scenes", lambda self: [])
    lacks = r"office_9 lacks .*metadata/replica/office_9/points.txt and .*/graph.pkl and the folder .*binaural_rirs"
    with pytest.raises(ss.SoundSpacesDataError, match=lacks):
        downloaded_split_scenes(paths, "test", "heard")


def test_a_source_node_list_added_to_a_scene_is_imported(tmp_path: Path, ss_dataset: Path) -> None:
    """source_nodes.txt is part of the layout: adding one after an import re-imports the scene's sources."""
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    directory = ssi.import_scene(paths, tmp_path / "data", "office_9")
    np.testing.assert_array_equal(SceneStore(directory).array("source_nodes"), np.arange(8))
    paths.source_nodes_file("office_9").write_text("8\n0\n")
    ssi.import_scene(paths, tmp_path / "data", "office_9")
    np.testing.assert_array_equal(SceneStore(directory).array("source_nodes"), [0, 7])  # node 8 is index 7


def test_import_dataset_imports_only_the_named_scenes_and_forces_when_asked(
    tmp_path: Path, ss_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/import_soundspaces.py --scenes office_7 [--force]: that scene alone, rewritten when forced."""
    write_soundspaces_dataset(ss_dataset, "office_7")
    paths = ss.SoundSpacesPaths(ss_dataset, "replica")
    data = tmp_path / "data"
    office_7 = ssi.imported_scene_dir(data, "replica", "office_7")
    assert ssi.import_dataset(paths, data, ["office_7"]) == [office_7]
    assert not ssi.imported_scene_dir(data, "replica", "office_9").exists()
    written = _record_stage_writes(monkeypatch)
    ssi.import_dataset(paths, data, ["office_7"])
    assert written == []
    ssi.import_dataset(paths, data, ["office_7"], force=True)
    assert written == ["layout", "vision"]


def test_a_scene_a_later_release_imported_is_not_imported_over_without_force(tmp_path: Path, ss_dataset: Path) -> None:
    """A data root shared with a later release: the import script and training's import name its format and
    leave it alone, as a bake does; the script's --force imports it again in this release's format."""
    import import_soundspaces

    from asgf_nav.scenes.store import FORMAT_VERSION

    data = tmp_path / "data"
    argv = ["--root", str(ss_dataset), "--dataset", "replica", "--data-root", str(data), "--scenes", "office_9"]
    assert import_soundspaces.main(argv) == 0
    manifest = ssi.imported_scene_dir(data, "replica", "office_9") / "manifest.json"
    later = FORMAT_VERSION + 1
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": later}))
    stored = manifest.read_text()
    said = (
        rf"scene manifest {re.escape(str(manifest))} has format_version {later}: the scene was baked by a later "
        rf"release of asgf-nav \(this release reads format {FORMAT_VERSION}\); .*import it again: python "
        rf"scripts/import_soundspaces.py --root SOUNDSPACES_ROOT --dataset replica --data-root {re.escape(str(data))} "
        r"--scenes office_9 --force"
    )
    with pytest.raises(SceneStoreError, match=said):
        import_soundspaces.main(argv)
    with pytest.raises(SceneStoreError, match=said):  # training imports a scene on first use
        ssi.import_scene(ss.SoundSpacesPaths(ss_dataset, "replica"), data, "office_9")
    assert manifest.read_text() == stored  # untouched
    assert import_soundspaces.main([*argv, "--force"]) == 0
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION
    assert SceneStore(manifest.parent).array("positions").shape == (8, 3)


def test_import_dataset_with_no_scene_downloaded_says_what_it_needs(tmp_path: Path) -> None:
    """An import from a wrong or empty root is an error naming the folders it looked in, not 0 scenes imported."""
    paths = ss.SoundSpacesPaths(tmp_path / "empty", "replica")
    need = re.escape(f"{tmp_path / 'empty' / 'metadata' / 'replica'}/<scene>/{{points.txt,graph.pkl}}")
    with pytest.raises(ss.SoundSpacesDataError, match=rf"no SoundSpaces replica scene found: need {need}"):
        ssi.import_dataset(paths, tmp_path / "data")


def test_soundspaces_source_with_a_dataset_soundspaces_lacks_is_refused(tmp_path: Path, ss_dataset: Path) -> None:
    """scenes.source=soundspaces with dataset tiny is an error; with source auto (and no root named), tiny runs
    on embedded scenes."""
    cfg = make_cfg(tmp_path, ss_dataset)
    cfg.scenes.dataset = "tiny"
    with pytest.raises(ss.SoundSpacesDataError, match=r"source=soundspaces needs scenes.dataset replica or mp3d, not"):
        ssi.scene_source(cfg)
    cfg.scenes.source, cfg.scenes.soundspaces_root = "auto", None
    assert ssi.scene_source(cfg) == "embedded"
    cfg.scenes.source = "soundspace"  # a misspelling, built in code past load_config's check
    with pytest.raises(ss.SoundSpacesDataError, match=r"must be auto, embedded or soundspaces, got 'soundspace'"):
        ssi.scene_source(cfg)


# ------------------------------------------------------------------------------------------------------------
# World: a split none of whose scenes is downloaded
def test_a_split_with_none_of_its_scenes_downloaded_is_refused_by_name(tmp_path: Path, ss_dataset: Path) -> None:
    """Another split's scene is downloaded but none of this split's: an error naming them, not an empty world."""
    write_soundspaces_dataset(ss_dataset, "office_7")
    split_dir = ss_dataset / "datasets" / "audionav" / "replica" / "v1" / "train_telephone"
    (split_dir / "content" / "office_7.json.gz").unlink()  # office_7 belongs to no train episode
    shutil.rmtree(ss_dataset / "binaural_rirs" / "replica" / "office_9")
    cfg = make_cfg(tmp_path, ss_dataset, sensors=["spectrogram"])
    with pytest.raises(ss.SoundSpacesDataError, match=r"none of the train scenes \['office_9'\] of .* is downloaded"):
        load_soundspaces_world(cfg, "train")


def test_files_a_spectrogram_store_served_as_silence_count_as_the_worlds(tmp_path: Path, ss_dataset: Path, monkeypatch):
    """A store file baked while RIR files were missing serves their silence without reading them: opening it
    counts them (count_silenced) as its world's, and the process's, as reading them would."""
    monkeypatch.setattr(ss, "_SILENCED", {})
    registered: list = []
    monkeypatch.setattr(ss, "atexit", SimpleNamespace(register=registered.append))
    world = load_soundspaces_world(make_cfg(tmp_path, ss_dataset, on_missing="silence"), "train")
    rirs = ss.soundspaces_rirs(world.scene("office_9"))
    assert rirs is not None and ss.soundspaces_rirs(SimpleNamespace(rir=lambda r, s, y: None)) is None
    listed = rirs.paths.rir_dir("office_9") / "270" / "7_5.wav"
    rirs.count_silenced([listed])
    assert ss.silenced_rir_files(world.scenes.values()) == {"replica/office_9": {str(listed)}}
    assert ss.silence_fallback_summary() == {"replica/office_9": 1} and registered == [ss._log_silence_summary]


# ------------------------------------------------------------------------------------------------------------
# Sound names: joined to sounds/1s_all, they must stay inside it
@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "sub/telephone", "..\\outside", "", ".", "..", "a\0b"])
def test_an_episode_naming_a_sound_outside_the_sounds_folder_is_refused(
    tmp_path: Path, ss_dataset: Path, name: str
) -> None:
    """An episode's sound name becomes sounds/1s_all/{name}.wav and a spectrogram store path: a name with a
    separator, an absolute one or '..' would read files elsewhere, so loading the episodes refuses it by name."""
    content = ss_dataset / "datasets" / "audionav" / "replica" / "v1" / "train_telephone" / "content"
    with gzip.open(content / "office_9.json.gz", "rt") as f:
        records = json.load(f)["episodes"]
    records[1]["info"]["sound"] = name
    with gzip.open(content / "office_9.json.gz", "wt") as f:
        json.dump({"episodes": records}, f)
    with pytest.raises(EpisodeError, match=r"episode 1 in .*office_9\.json\.gz.*must be a plain file name") as info:
        load_episodes(episode_dataset_path(ss_dataset, "replica", "train", "heard"))
    assert repr(name) in str(info.value)
    with pytest.raises(ss.SoundSpacesDataError, match=r"must be a plain file name"):
        ss.SoundSpacesSounds(ss_dataset / "sounds" / "1s_all", SR).waveform(name)


def test_sound_names_with_dots_or_an_extension_are_plain_file_names(tmp_path: Path) -> None:
    """Names SoundSpaces data uses ('telephone', 'telephone.wav', 'c.d-e') still load."""
    record = {"episode_id": "0", "scene_id": "office_9/habitat/mesh_semantic.ply", "start_position": [0, 0, 0],
              "start_rotation": [0, 0, 0, 1], "goals": [{"position": [1, 0, 0]}],
              "info": {"sound": "telephone", "geodesic_distance": 1.0}}  # fmt: skip
    for name in ("telephone", "telephone.wav", "c.d-e", "..hidden"):
        record["info"]["sound"] = name
        assert Episode.from_json(record, "x.json.gz").sound == name
    sf.write(tmp_path / "c.d-e.wav", np.full(SR, 0.1, dtype=np.float32), SR)
    assert ss.SoundSpacesSounds(tmp_path, SR).waveform("c.d-e").shape == (SR,)


def test_a_source_file_is_hashed_once_while_it_stays_the_same_file(tmp_path: Path, monkeypatch) -> None:
    """An import compares a copied source before and under the lock, then records it: one read, not three."""
    import hashlib

    source = tmp_path / "office_9.pkl"
    source.write_bytes(b"views" * 1000)
    opened = []
    monkeypatch.setattr(
        ssi, "open", lambda *args, **kwargs: opened.append(args[0]) or open(*args, **kwargs), raising=False
    )
    digests = {ssi._file_sha256(source) for _ in range(3)}
    assert digests == {hashlib.sha256(b"views" * 1000).hexdigest()} and opened == [source]
    source.write_bytes(b"other" * 999)  # another file now (another size): read again
    assert ssi._file_sha256(source) == hashlib.sha256(b"other" * 999).hexdigest() and len(opened) == 2
