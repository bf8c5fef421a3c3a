"""Baked spectrogram store: same values as live computation, resumable bakes, stale stores refused."""

import threading
import time

import numpy as np
import pytest
import torch

from asgf_nav.config import ExperimentConfig, TaskConfig
from asgf_nav.io import exclusive_lock
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episodes import generate_split
from asgf_nav.tasks.factory import spectrogram_store_root
from asgf_nav.tasks.spectrogram import TorchSpectrogram, spectrogram_np
from asgf_nav.tasks.spectrogram_store import bake, bake_world, spectrograms_for, store_bytes, store_path
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SR = 16000
SOUNDS = ["bell", "drum"]


class CountingRirs:
    """Wraps a scene's RIR function to count how often the env renders one."""

    def __init__(self, rir):
        self.rir, self.calls = rir, 0

    def __call__(self, *args):
        self.calls += 1
        return self.rir(*args)


def _world():
    scenes = [
        grid_scene("grid_a", num_sources=3, sample_rate=SR),
        grid_scene("grid_b", blocked=((2, 1),), num_sources=2, sample_rate=SR),
    ]
    return synthetic_world(scenes, sample_rate=SR)


def test_baked_values_match_live_and_reference_spectrograms(tmp_path):
    world = _world()
    scene = world.scenes["grid_a"]
    spectrogram = TorchSpectrogram(SR)
    path = bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=7)
    assert path == store_path(tmp_path, scene, "bell") and not list(path.parent.glob("*partial*"))
    stored = np.load(path)
    assert stored.shape == (3, scene.num_nodes, 4, *spectrogram.shape)
    assert path.stat().st_size >= store_bytes([scene], SR)
    receivers = np.repeat(np.arange(scene.num_nodes), 4)
    yaws = np.tile(np.arange(4), scene.num_nodes)
    for slot, source in enumerate(scene.source_nodes):
        live = spectrograms_for(
            scene,
            torch.from_numpy(world.sound("bell")),
            spectrogram,
            receivers,
            np.full(receivers.size, source),
            yaws,
            batch=32,
        ).numpy()
        np.testing.assert_allclose(stored[slot, receivers, yaws], live, atol=1e-5)
    reference = spectrogram_np(world.sound("bell"), scene.rir(5, int(scene.source_nodes[1]), 2), SR)
    np.testing.assert_allclose(stored[1, 5, 2], reference, atol=1e-4)


def _rollout(env, actions, counters):
    """Spectrogram observations of a scripted rollout, and how many RIRs the env rendered."""
    before = sum(c.calls for c in counters)
    frames = [env.reset()["spectrogram"]] + [env.step(a)[0]["spectrogram"] for a in actions]
    return torch.stack(frames), sum(c.calls for c in counters) - before


def test_env_reads_misses_from_the_store_with_the_same_observations(tmp_path):
    world = _world()
    episodes = generate_split(world, "train", "unheard", SOUNDS, TaskConfig(train_episodes_per_scene=10))
    counters = []
    for scene in world.scenes.values():
        scene.rir = CountingRirs(scene.rir)
        counters.append(scene.rir)
    cfg = TaskConfig(max_steps=30, sensors=["spectrogram"])
    actions = np.random.default_rng(0).choice(4, size=(80, 4), p=[0.05, 0.55, 0.2, 0.2])
    plain = BatchedAudioNavEnv(world, episodes, 4, cfg=cfg, seed=3)
    expected, plain_renders = _rollout(plain, actions, counters)
    assert plain_renders == plain.cache_stats()["misses"] > 100

    bake_world(tmp_path, world, ["bell"])  # drum stays unbaked: computed live
    partly = BatchedAudioNavEnv(world, episodes, 4, cfg=cfg, seed=3, spectrogram_store=tmp_path)
    got, renders = _rollout(partly, actions, counters)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    reads = partly.cache_stats()["store_reads"]
    assert reads > 0 and renders == plain_renders - reads + 3 * 2  # + three verification probes per file

    bake_world(tmp_path, world, SOUNDS)
    stored = BatchedAudioNavEnv(world, episodes, 4, cfg=cfg, seed=3, spectrogram_store=tmp_path)
    got, renders = _rollout(stored, actions, counters)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert stored.cache_stats()["store_reads"] == plain_renders
    assert renders == 3 * len(stored.store.baked()) and len(stored.store.baked()) == 4


def test_interrupted_bake_resumes_at_the_next_source(tmp_path):
    world = _world()
    scene = world.scenes["grid_a"]
    spectrogram = TorchSpectrogram(SR)
    states_per_source = scene.num_nodes * 4

    class Interrupt(Exception):
        pass

    done = []

    def stop_in_second_source(n):
        done.append(n)
        if sum(done) > states_per_source + 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=stop_in_second_source)
    final = store_path(tmp_path, scene, "bell")
    assert not final.exists() and final.with_name("bell.partial.npy").exists()
    counter = scene.rir = CountingRirs(scene.rir)
    resumed = []
    bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=resumed.append)
    assert counter.calls == 2 * states_per_source  # sources 2 and 3 only
    assert resumed[0] == states_per_source  # the bar starts where the bake resumed
    fresh = bake(tmp_path / "fresh", scene, "bell", world.sound("bell"), spectrogram)
    np.testing.assert_allclose(np.load(final), np.load(fresh), atol=1e-5)
    assert not list(final.parent.glob("*partial*"))


def test_a_file_being_baked_by_another_process_is_waited_for_not_baked_twice(tmp_path):
    world = _world()
    scene = world.scenes["grid_b"]
    spectrogram = TorchSpectrogram(SR)
    final = store_path(tmp_path, scene, "drum")
    finished = []
    with exclusive_lock(final.with_name("drum.lock"), "test"):  # "another process" holds the file
        second = threading.Thread(
            target=lambda: finished.append(bake(tmp_path, scene, "drum", world.sound("drum"), spectrogram))
        )
        second.start()
        time.sleep(1.0)
        assert second.is_alive() and not list(final.parent.glob("drum.partial*"))  # waits, writes nothing
        other = bake(tmp_path / "other", scene, "drum", world.sound("drum"), spectrogram)
        other.replace(final)  # the other process finishes the file
        counter = scene.rir = CountingRirs(scene.rir)
    second.join(timeout=60)
    assert finished == [final] and counter.calls == 0  # found finished: nothing rendered again


def test_store_from_other_data_is_refused_with_the_file_named(tmp_path):
    world = _world()
    episodes = generate_split(world, "train", "heard", ["bell"], TaskConfig(train_episodes_per_scene=4))
    scene = world.scenes["grid_a"]
    wrong = bake(tmp_path / "other", scene, "drum", world.sound("drum"), TorchSpectrogram(SR))
    target = store_path(tmp_path, scene, "bell")
    target.parent.mkdir(parents=True)
    target.write_bytes(wrong.read_bytes())  # the drum's spectrograms filed under the bell
    env = BatchedAudioNavEnv(world, episodes, 2, cfg=TaskConfig(sensors=["spectrogram"]), spectrogram_store=tmp_path)
    with pytest.raises(ValueError, match="bell.npy does not match"):
        for _ in range(5):
            env.reset()
    np.save(target, np.zeros((2, 3), dtype=np.float32))
    env = BatchedAudioNavEnv(world, episodes, 2, cfg=TaskConfig(sensors=["spectrogram"]), spectrogram_store=tmp_path)
    with pytest.raises(ValueError, match=r"bell.npy holds float32 \(2, 3\)"):
        for _ in range(5):
            env.reset()


def test_store_root_from_config(tmp_path):
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    assert spectrogram_store_root(cfg) == tmp_path / "spectrograms"
    cfg.task.spectrogram_store = ""
    assert spectrogram_store_root(cfg) is None
    cfg.task.spectrogram_store = str(tmp_path / "elsewhere")
    assert spectrogram_store_root(cfg) == tmp_path / "elsewhere"
