"""Baked spectrogram store: same values as live computation, resumable bakes, stale stores refused."""

import errno
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from scene_helpers import bake_audio_only, cheap_acoustics

from asgf_nav.acoustics import rir as rendered_rirs
from asgf_nav.config import ExperimentConfig, TaskConfig, load_config
from asgf_nav.io import exclusive_lock
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.factory import spectrogram_store_root
from asgf_nav.tasks.spectrogram import TorchSpectrogram, spectrogram_np
from asgf_nav.tasks.spectrogram_bake import bake, bake_world, store_bytes
from asgf_nav.tasks.spectrogram_store import (
    SpectrogramStore,
    SpectrogramStoreError,
    fingerprint_path,
    spectrograms_for,
    store_fingerprint,
    store_path,
    verification_probes,
)
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


def test_opening_store_files_logs_the_1st_10th_100th_not_each(tmp_path, caplog, monkeypatch):
    """A run opens a file per (scene, sound) it draws, again in each env it builds: hundreds of them on an
    unheard split, which would bury the update lines if each had a line of its own."""
    world = _world()
    bake_world(tmp_path, world, SOUNDS)
    store = SpectrogramStore(tmp_path, world, TorchSpectrogram(SR))
    with caplog.at_level(logging.INFO, logger="asgf_nav.tasks.spectrogram_store"):
        for scene in world.scenes.values():
            for sound in SOUNDS:
                store.lookup(scene, sound, np.zeros(1), np.asarray(scene.source_nodes[:1]), np.zeros(1))
    assert len(store.baked()) == 4 and len(caplog.records) == 1
    assert caplog.messages[0].startswith(f"spectrogram store {tmp_path}: 1 file(s) opened and verified so far")
    caplog.clear()
    store._verified_count = 8  # as if eight more had been opened: the next one is the 10th
    store._arrays.clear()
    with caplog.at_level(logging.INFO, logger="asgf_nav.tasks.spectrogram_store"):
        for sound in SOUNDS:
            store.lookup(
                world.scenes["grid_a"],
                sound,
                np.zeros(1),
                np.asarray([world.scenes["grid_a"].source_nodes[0]]),
                np.zeros(1),
            )
    assert [m.split(": ")[1].split(" file")[0] for m in caplog.messages] == ["10"]


def test_a_store_file_the_user_may_not_read_is_named_and_kept_not_baked_again(tmp_path, monkeypatch):
    """A store another user baked with umask 077: the run said the file was damaged and told the user to bake
    it again over the owner's file, or (a directory it may not enter) ended in a traceback."""
    import errno

    from asgf_nav.tasks import spectrogram_store as module

    world = _world()
    scene, spectrogram = world.scenes["grid_a"], TorchSpectrogram(SR)
    path = bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    baked = path.read_bytes()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    advice = r"cannot read spectrogram store file .*bell\.npy: Permission denied .*task\.spectrogram_store=''"
    monkeypatch.setattr(module, "load_npy", denied)
    store = SpectrogramStore(tmp_path, world, spectrogram)
    with pytest.raises(SpectrogramStoreError, match=advice):
        store.lookup(scene, "bell", np.zeros(1), np.asarray(scene.source_nodes[:1]), np.zeros(1))
    with pytest.raises(SpectrogramStoreError, match=advice):
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    assert path.read_bytes() == baked  # not deleted to bake it again
    monkeypatch.undo()
    is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: denied() if self == path else is_file(self))
    with pytest.raises(SpectrogramStoreError, match=advice):  # its directory may not be entered
        SpectrogramStore(tmp_path, world, spectrogram).lookup(
            scene, "bell", np.zeros(1), np.asarray(scene.source_nodes[:1]), np.zeros(1)
        )


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
    assert reads > 0 and renders == plain_renders - reads + 4 * 2  # + four verification probes per file

    bake_world(tmp_path, world, SOUNDS)
    stored = BatchedAudioNavEnv(world, episodes, 4, cfg=cfg, seed=3, spectrogram_store=tmp_path)
    got, renders = _rollout(stored, actions, counters)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert stored.cache_stats()["store_reads"] == plain_renders
    assert renders == 4 * len(stored.store.baked()) and len(stored.store.baked()) == 4


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
    # a partial file of another shape (the state file still matching) is not resumed but baked afresh
    final.unlink()
    with pytest.raises(Interrupt):
        done.clear()
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=stop_in_second_source)
    np.save(final.with_name("bell.partial.npy"), np.zeros((1, 2), dtype=np.float32))
    counter.calls = 0
    bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8)
    assert counter.calls == 3 * states_per_source
    np.testing.assert_allclose(np.load(final), np.load(fresh), atol=1e-5)


def test_a_bake_stopped_in_its_first_source_starts_over_without_a_warning(tmp_path, caplog):
    """Its state file is written after each source: none means nothing finished was lost, not damage."""
    world = _world()
    scene, spectrogram = world.scenes["grid_a"], TorchSpectrogram(SR)

    def stop(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, progress=stop)
    partial = store_path(tmp_path, scene, "bell").with_name("bell.partial.npy")
    assert partial.exists() and not partial.with_name("bell.partial.json").exists()
    with caplog.at_level(logging.INFO, logger="asgf_nav.tasks.spectrogram_bake"):
        path = bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    assert f"starting {partial} over: its bake stopped before its first source was done" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING] and np.load(path).shape[0] == 3


def test_a_discarded_partial_bake_leaves_no_state_a_later_resume_trusts(tmp_path: Path) -> None:
    """A partial file baked afresh loses its old state file, so a bake stopped in its first source restarts at 0."""
    world = _world()
    scene = world.scenes["grid_a"]
    spectrogram = TorchSpectrogram(SR)
    final = store_path(tmp_path, scene, "bell")
    final.parent.mkdir(parents=True)
    np.save(final.with_name("bell.partial.npy"), np.zeros((1, 2), dtype=np.float32))  # unusable: baked afresh
    fingerprint = store_fingerprint(scene, "bell", world.sound("bell"), spectrogram)
    final.with_name("bell.partial.json").write_text(json.dumps({"fingerprint": fingerprint, "sources_done": 2}))

    class Interrupt(Exception):
        pass

    def stop(n: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):  # stopped after the first chunk of source 0, before any source is done
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=stop)
    counter = scene.rir = CountingRirs(scene.rir)
    bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8)
    assert counter.calls == 3 * scene.num_nodes * 4  # all three sources baked: none taken as done


class _Interrupt(Exception):
    pass


def _bake_stopped_in_second_source(tmp_path: Path, scene, world, spectrogram) -> Path:
    """Bake ``scene``'s bell into ``tmp_path`` and stop it during its second source; the partial file."""
    done = []

    def stop(n: int) -> None:
        done.append(n)
        if sum(done) > scene.num_nodes * 4 + 10:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=stop)
    return store_path(tmp_path, scene, "bell").with_name("bell.partial.npy")


def _no_space(code: int):
    def fallocate(fd: int, offset: int, length: int) -> None:
        raise OSError(code, os.strerror(code))

    return fallocate


def _reserves_space(directory: Path) -> bool:
    """Whether this platform and ``directory``'s filesystem reserve a file's space (posix_fallocate)."""
    from asgf_nav.tasks.spectrogram_bake import reserve_space

    probe = directory / "probe"
    with open(probe, "wb") as f:
        f.truncate(1 << 20)  # sparse
    try:
        return reserve_space(probe) and probe.stat().st_blocks * 512 >= 1 << 20
    finally:
        probe.unlink()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_bake_without_room_for_its_file_stops_with_an_error_naming_it_not_a_sigbus(tmp_path, monkeypatch, code):
    """The partial file's space is reserved when it is created: a full disk or quota is an error naming the file,
    its size and the free space (writing into a sparse memory-mapped file would die of SIGBUS midway), and the
    empty partial file is removed; once there is room the bake runs."""
    world = _world()
    scene = world.scenes["grid_a"]
    spectrogram = TorchSpectrogram(SR)
    final = store_path(tmp_path, scene, "bell")
    counter = scene.rir = CountingRirs(scene.rir)
    monkeypatch.setattr(os, "posix_fallocate", _no_space(code), raising=False)
    with pytest.raises(SpectrogramStoreError) as refused:
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    message = str(refused.value)
    size = f"{store_bytes([scene], SR) / 1e6:.0f} MB"
    assert f"cannot bake spectrogram store file {final.with_name('bell.partial.npy')}: reserving its {size}" in message
    assert os.strerror(code) in message and " free there" in message and "the partial file was removed" in message
    assert "free space on that filesystem" in message and "--out DIR" in message
    assert ("disk quota" in message) == (code == errno.EDQUOT)
    assert counter.calls == 0 and not list(final.parent.glob("bell.partial*")) and not final.exists()
    monkeypatch.undo()
    assert bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram) == final
    assert counter.calls == 3 * scene.num_nodes * 4


def test_a_resumed_bake_without_room_keeps_its_partial_file_to_resume_later(tmp_path, monkeypatch):
    world = _world()
    scene = world.scenes["grid_a"]
    spectrogram = TorchSpectrogram(SR)
    partial = _bake_stopped_in_second_source(tmp_path, scene, world, spectrogram)
    monkeypatch.setattr(os, "posix_fallocate", _no_space(errno.ENOSPC), raising=False)
    with pytest.raises(SpectrogramStoreError, match=f"{partial}: reserving .* kept: baking again resumes at source 2"):
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    assert partial.exists() and partial.with_name("bell.partial.json").exists()
    monkeypatch.undo()
    counter = scene.rir = CountingRirs(scene.rir)
    bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram)
    assert counter.calls == 2 * scene.num_nodes * 4  # resumed at the second source


def test_a_filesystem_that_cannot_reserve_space_is_baked_into_unreserved(tmp_path, monkeypatch, caplog):
    """... with a warning, once per reason (not per scene folder): a full disk then ends the bake with a SIGBUS,
    not an error."""
    from asgf_nav.tasks import spectrogram_bake as module

    monkeypatch.setattr(module, "_UNRESERVED_WARNED", set())  # this process's earlier warnings are not the test's
    world = _world()
    scene = world.scenes["grid_b"]
    for code in (errno.EOPNOTSUPP, errno.EINVAL):
        monkeypatch.setattr(os, "posix_fallocate", _no_space(code), raising=False)
        with caplog.at_level(logging.WARNING, logger="asgf_nav.tasks.spectrogram_bake"):
            path = bake(tmp_path / str(code), scene, "drum", world.sound("drum"), TorchSpectrogram(SR))
            bake(tmp_path / str(code), world.scenes["grid_a"], "bell", world.sound("bell"), TorchSpectrogram(SR))
        assert np.load(path).shape[:2] == (2, scene.num_nodes)
        assert (
            len(caplog.records) == 1 and "a disk that fills up during the bake ends it with a bus error" in caplog.text
        )
        caplog.clear()
    monkeypatch.delattr(os, "posix_fallocate", raising=False)  # a platform without it
    with caplog.at_level(logging.WARNING, logger="asgf_nav.tasks.spectrogram_bake"):
        assert bake(tmp_path / "none", scene, "drum", world.sound("drum"), TorchSpectrogram(SR)).exists()
    assert "this platform has no posix_fallocate" in caplog.text


def test_the_partial_files_space_is_reserved_when_created_and_when_resumed(tmp_path):
    if not _reserves_space(tmp_path):
        pytest.skip("this filesystem or platform reserves no space (posix_fallocate)")
    world = _world()
    scene = world.scenes["grid_a"]
    spectrogram = TorchSpectrogram(SR)
    size = store_bytes([scene], SR)

    def stop(n: int) -> None:
        raise _Interrupt

    with pytest.raises(_Interrupt):  # after the first chunk: a sparse file would hold about 8 states
        bake(tmp_path, scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=stop)
    partial = store_path(tmp_path, scene, "bell").with_name("bell.partial.npy")
    assert partial.stat().st_blocks * 512 >= size
    partial = _bake_stopped_in_second_source(tmp_path / "resumed", scene, world, spectrogram)
    data = partial.read_bytes()
    partial.unlink()
    with open(partial, "wb") as f:  # the file as an unreserved bake left it: sparse after its first source
        f.truncate(len(data))
        f.write(data[: len(data) - size + size // 3])  # the header and the first of three sources
    assert partial.stat().st_blocks * 512 < size / 2
    with pytest.raises(_Interrupt):  # the bar's first update comes after the reservation
        bake(tmp_path / "resumed", scene, "bell", world.sound("bell"), spectrogram, batch=8, progress=stop)
    assert partial.stat().st_blocks * 512 >= size


def test_a_file_being_baked_by_another_process_is_waited_for_not_baked_twice(tmp_path, caplog):
    from stopping import wait_for_log

    world = _world()
    scene = world.scenes["grid_b"]
    spectrogram = TorchSpectrogram(SR)
    final = store_path(tmp_path, scene, "drum")
    finished = []
    with exclusive_lock(final.with_name("drum.lock"), "test"):  # "another process" holds the file
        second = threading.Thread(
            target=lambda: finished.append(bake(tmp_path, scene, "drum", world.sound("drum"), spectrogram))
        )
        with caplog.at_level(logging.INFO, logger="asgf_nav.io"):
            second.start()
            wait_for_log(caplog, "is being written by another process; waiting for it", second)
        assert not list(final.parent.glob("drum.partial*"))  # waits, writes nothing
        other = bake(tmp_path / "other", scene, "drum", world.sound("drum"), spectrogram)
        fingerprint_path(other).replace(fingerprint_path(final))  # the other process finishes the file:
        other.replace(final)  # fingerprint first, then the .npy under its name
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
    fingerprint_path(target).write_bytes(fingerprint_path(wrong).read_bytes())
    env = BatchedAudioNavEnv(world, episodes, 2, cfg=TaskConfig(sensors=["spectrogram"]), spectrogram_store=tmp_path)
    with pytest.raises(
        SpectrogramStoreError, match="bell.npy was baked from other data .*sound.name: baked 'drum', now 'bell'"
    ):
        for _ in range(5):
            env.reset()
    np.save(target, np.zeros((2, 3), dtype=np.float32))
    env = BatchedAudioNavEnv(world, episodes, 2, cfg=TaskConfig(sensors=["spectrogram"]), spectrogram_store=tmp_path)
    with pytest.raises(ValueError, match=r"bell.npy holds float32 \(2, 3\)"):
        for _ in range(5):
            env.reset()
    np.save(target, np.load(wrong).astype(np.float64))  # the right shape in another dtype
    env = BatchedAudioNavEnv(world, episodes, 2, cfg=TaskConfig(sensors=["spectrogram"]), spectrogram_store=tmp_path)
    with pytest.raises(ValueError, match=r"bell.npy holds float64 \(3, .*needs float32 \(3,"):
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


def test_probes_hear_each_source_from_afar_so_stores_stale_away_from_it_are_refused(tmp_path):
    # every node holds a source, as in SoundSpaces scenes: probes at (slot k, node k) would hear each
    # source from where it stands, where a renderer change (such as the late tail's onset) may not show
    scene = grid_scene("everywhere", nx=3, nz=2, sample_rate=SR)
    world = synthetic_world([scene], sample_rate=SR)
    slots = len(scene.source_nodes)
    probes = verification_probes(scene)[:3]
    assert [slot for slot, _, _ in probes] == [0, slots // 2, slots - 1]
    assert all(receiver != scene.source_nodes[slot] for slot, receiver, _ in probes)
    path = bake(tmp_path, scene, "bell", world.sound("bell"), TorchSpectrogram(SR))
    stored = np.load(path, mmap_mode="r+")
    stored[np.asarray(scene.source_nodes)[:, None] != np.arange(scene.num_nodes)[None]] += 0.5
    stored.flush()
    del stored
    store = SpectrogramStore(tmp_path, world, TorchSpectrogram(SR))
    with pytest.raises(SpectrogramStoreError, match="bell.npy does not match .*delete it and bake it again"):
        store.lookup(scene, "bell", np.array([0]), scene.source_nodes[:1], np.array([0]))


def test_a_store_stale_only_on_the_source_node_is_refused(tmp_path):
    """The goal node's direct sound (RENDER_VERSION 3) changed only the responses heard on the source's
    own node; a store baked before it must not pass its verification."""
    scene = grid_scene("everywhere", nx=3, nz=2, sample_rate=SR)
    world = synthetic_world([scene], sample_rate=SR)
    assert verification_probes(scene)[-1] == (0, int(scene.source_nodes[0]), 2)
    path = bake(tmp_path, scene, "bell", world.sound("bell"), TorchSpectrogram(SR))
    stored = np.load(path, mmap_mode="r+")
    slots = np.arange(len(scene.source_nodes))
    stored[slots, np.asarray(scene.source_nodes)] += 0.5
    stored.flush()
    del stored
    store = SpectrogramStore(tmp_path, world, TorchSpectrogram(SR))
    with pytest.raises(SpectrogramStoreError, match="bell.npy does not match"):
        store.lookup(scene, "bell", np.array([0]), scene.source_nodes[:1], np.array([1]))


def test_a_store_holding_nan_at_a_probe_is_refused(tmp_path: Path) -> None:
    """A NaN where a probe reads (a corrupted file) fails the verification, not passes it as no difference."""
    scene = grid_scene("g", nx=3, nz=2, num_sources=2, sample_rate=SR)
    world = synthetic_world([scene], sample_rate=SR)
    path = bake(tmp_path, scene, "bell", world.sound("bell"), TorchSpectrogram(SR))
    slot, receiver, yaw = verification_probes(scene)[0]
    stored = np.load(path, mmap_mode="r+")
    stored[slot, receiver, yaw, 0, 0, 0] = np.nan
    stored.flush()
    del stored
    store = SpectrogramStore(tmp_path, world, TorchSpectrogram(SR))
    with pytest.raises(SpectrogramStoreError, match=r"bell.npy does not match .*max difference nan"):
        store.lookup(scene, "bell", np.array([0]), scene.source_nodes[:1], np.array([0]))


def test_store_bytes_is_the_disk_space_of_every_state_of_one_sound() -> None:
    """(sources x nodes x 4 yaws) states of 65 x 26 x 2 float32 values (16 kHz) for each scene, summed."""
    scenes = list(_world().scenes.values())  # 3 sources on 20 nodes, 2 sources on 19 nodes
    assert TorchSpectrogram(SR).shape == (65, 26, 2)
    assert store_bytes(scenes, SR) == (3 * 20 + 2 * 19) * 4 * (65 * 26 * 2 * 4)


def test_an_empty_store_file_is_refused_with_its_path_and_baked_again(tmp_path):
    world = _world()
    scene = world.scenes["grid_b"]
    target = store_path(tmp_path, scene, "drum")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")  # a copy that ran out of disk
    store = SpectrogramStore(tmp_path, world, TorchSpectrogram(SR))
    with pytest.raises(SpectrogramStoreError, match=f"spectrogram store {target} is not a readable .npy file"):
        store.lookup(scene, "drum", np.array([0]), scene.source_nodes[:1], np.array([0]))
    bake(tmp_path, scene, "drum", world.sound("drum"), TorchSpectrogram(SR))
    assert np.load(target).shape[:2] == (2, scene.num_nodes)


def test_a_finished_store_of_another_waveform_is_baked_again(tmp_path, caplog):
    world = _world()
    scene = world.scenes["grid_b"]
    spectrogram = TorchSpectrogram(SR)
    path = bake(tmp_path, scene, "drum", world.sound("drum"), spectrogram)
    counter = scene.rir = CountingRirs(scene.rir)
    assert bake(tmp_path, scene, "drum", world.sound("drum"), spectrogram) == path and counter.calls == 0
    louder = 2.0 * world.sound("drum")  # the sound bank's file changed under the same name
    with caplog.at_level(logging.WARNING, logger="asgf_nav.tasks.spectrogram_bake"):
        bake(tmp_path, scene, "drum", louder, spectrogram)
    assert "sound.sha256" in caplog.text and "baking it again" in caplog.text
    assert counter.calls == len(scene.source_nodes) * scene.num_nodes * 4
    live = spectrograms_for(scene, torch.from_numpy(louder), spectrogram, [3], [scene.source_nodes[1]], [2]).numpy()
    np.testing.assert_allclose(np.load(path)[1, 3, 2], live[0], atol=1e-5)


def test_the_rebake_command_of_a_soundspaces_scene_names_the_data_root_it_was_imported_to(tmp_path):
    """Without it the printed command imported the scene's graph and views again under ./data."""
    from dataclasses import replace

    from asgf_nav.scenes.soundspaces import SoundSpacesPaths, SoundSpacesRirs
    from asgf_nav.tasks.spectrogram_store import rebake_command

    scene = grid_scene("room", sample_rate=SR, dataset="mp3d")
    rirs = SoundSpacesRirs(
        SoundSpacesPaths(tmp_path / "ss", "mp3d"), "room", np.arange(scene.num_nodes), scene.source_nodes,
        data_root=tmp_path / "my data",
    )  # fmt: skip
    command = rebake_command(tmp_path / "store", replace(scene, rir=rirs.rir), "bell", "val", "run/config.yaml")
    assert command.startswith(
        f"python scripts/bake_spectrograms.py --config run/config.yaml --dataset mp3d --data-root '{tmp_path}/my data' "
        f"scenes.source=soundspaces scenes.soundspaces_root={tmp_path / 'ss'} --split val --scenes room"
    )


def test_soundspaces_rirs_are_identified_by_dataset_and_scene_not_by_path(tmp_path, monkeypatch):
    """The same SoundSpaces data read through a relative or an absolute root, or with another missing-file
    policy, has the same fingerprint (a store that lists files baked as silence is refused under
    rir_on_missing=error all the same: see the test of files read as silence)."""
    from dataclasses import replace

    from asgf_nav.scenes.soundspaces import SoundSpacesPaths, SoundSpacesRirs

    monkeypatch.chdir(tmp_path)
    scene = grid_scene("room", sample_rate=SR)

    def fingerprint(root: Path, on_missing: str) -> dict:
        rirs = SoundSpacesRirs(
            SoundSpacesPaths(root, "mp3d"),
            "room",
            np.arange(scene.num_nodes),
            scene.source_nodes,
            on_missing=on_missing,
        )
        return store_fingerprint(replace(scene, rir=rirs.rir), "bell", np.zeros(SR), TorchSpectrogram(SR))

    relative = fingerprint(Path("soundspaces"), "error")
    assert relative["rirs"] == {"source": "soundspaces", "dataset": "mp3d", "scene": "room"}
    assert fingerprint(tmp_path / "soundspaces", "silence") == relative


# ------------------------------------------------------------------------------------------ baked scenes
AUDIO_ONLY_ACOUSTICS = cheap_acoustics()


@pytest.fixture(scope="module")
def audio_only_root(tmp_path_factory) -> Path:
    """The tiny preset's test scene baked for audio only (layout + acoustics, no views), cheaply."""
    return bake_audio_only(tmp_path_factory.mktemp("data"), ["tiny_room_test"], AUDIO_ONLY_ACOUSTICS)


def audio_only_cfg(root: Path) -> ExperimentConfig:
    """A spectrogram-only config for the scene of ``audio_only_root`` (with the acoustics it was baked with)."""
    cfg = load_config(None, AUDIO_ONLY_ACOUSTICS)
    cfg.scenes.dataset, cfg.scenes.data_root, cfg.task.sensors = "tiny", str(root), ["spectrogram"]
    return cfg


def test_the_world_cuts_the_travel_time_unless_kept_and_stores_tell_the_two_apart(audio_only_root, tmp_path):
    """task.keep_travel_time chooses the responses the task hears; a store baked from one is refused for the other."""
    from asgf_nav.tasks.world import load_world

    cfg = audio_only_cfg(audio_only_root)
    cut = load_world(cfg, "test").scenes["tiny_room_test"]
    cfg.task.keep_travel_time = True
    kept = load_world(cfg, "test").scenes["tiny_room_test"]
    source = int(cut.source_nodes[0])
    receiver = int(np.argmax(np.linalg.norm(cut.positions - cut.positions[source], axis=1)))
    first = kept.rir.__self__.direct_sample(receiver, source)
    assert first > 0 and not kept.rir(receiver, source, 0)[:first].any()
    np.testing.assert_array_equal(cut.rir(receiver, source, 0)[:-first], kept.rir(receiver, source, 0)[first:])
    spectrogram, world = TorchSpectrogram(cut.sample_rate), load_world(cfg, "test")
    bake(tmp_path, kept, "telephone", world.sound("telephone"), spectrogram)
    cfg.task.keep_travel_time = False
    world = load_world(cfg, "test")
    kept_by_name = r"rirs\.start: baked 'emission' \(task\.keep_travel_time=true\), now 'straight-line arrival'"
    with pytest.raises(SpectrogramStoreError, match=kept_by_name) as info:
        SpectrogramStore(tmp_path, world, spectrogram).lookup(
            world.scenes["tiny_room_test"], "telephone", np.array([0]), cut.source_nodes[:1], np.array([0])
        )
    # another run's store: the hint keeps it, naming a root of this run's own and its bake there
    other = tmp_path.with_name(f"{tmp_path.name}_no_travel_time")
    message = str(info.value)
    assert (
        "it is the store of runs with the other task.keep_travel_time. To keep it, give this run a root of its own, "
        f"task.spectrogram_store={other}, baked with "
    ) in message
    assert f"--out {other} " in message.split("; or bake it again")[0] + " "
    kept_file = (tmp_path / "tiny" / "tiny_room_test" / "telephone.npy").read_bytes()
    scene = world.scenes["tiny_room_test"]
    bake(other, scene, "telephone", world.sound("telephone"), spectrogram)  # as the hinted command bakes it
    SpectrogramStore(other, world, spectrogram).lookup(
        scene, "telephone", np.array([0]), cut.source_nodes[:1], np.array([0])
    )
    assert (tmp_path / "tiny" / "tiny_room_test" / "telephone.npy").read_bytes() == kept_file  # the other run's, kept


def test_a_renderer_change_refuses_baked_stores_and_restarts_partial_bakes(
    audio_only_root, tmp_path, monkeypatch, caplog
):
    from asgf_nav.tasks.world import load_world

    cfg = audio_only_cfg(audio_only_root)
    world = load_world(cfg, "test")
    scene = world.scenes["tiny_room_test"]
    spectrogram, wave = TorchSpectrogram(world.sample_rate), world.sound("telephone")
    states_per_source = scene.num_nodes * 4
    final = bake(tmp_path, scene, "telephone", wave, spectrogram)
    version = rendered_rirs.RENDER_VERSION

    monkeypatch.setattr(rendered_rirs, "RENDER_VERSION", version + 1)  # the same acoustics render differently now
    store = SpectrogramStore(tmp_path, world, spectrogram)
    with pytest.raises(SpectrogramStoreError) as refused:
        store.lookup(scene, "telephone", np.array([0]), scene.source_nodes[:1], np.array([0]))
    message = str(refused.value)
    assert f"spectrogram store {final} was baked from other data" in message
    assert f"rirs.render_version: baked {version}, now {version + 1}" in message
    assert f"scripts/bake_spectrograms.py --config <config> --dataset tiny --data-root {audio_only_root}" in message
    assert f"--split test --scenes tiny_room_test --sounds telephone --out {tmp_path}" in message

    class Interrupt(Exception):
        pass

    def stop_after(states):
        done = []

        def progress(n):
            done.append(n)
            if sum(done) > states:
                raise Interrupt

        return done, progress

    _, progress = stop_after(states_per_source)
    with pytest.raises(Interrupt):  # the stale file is baked again; interrupted after its first source
        bake(tmp_path, scene, "telephone", wave, spectrogram, progress=progress)
    assert final.with_name("telephone.partial.json").exists() and not final.exists()
    monkeypatch.setattr(rendered_rirs, "RENDER_VERSION", version + 2)
    resumed, progress = stop_after(0)
    with caplog.at_level(logging.WARNING, logger="asgf_nav.tasks.spectrogram_bake"), pytest.raises(Interrupt):
        bake(tmp_path, scene, "telephone", wave, spectrogram, progress=progress)
    assert "discarding the partial bake" in caplog.text
    assert f"rirs.render_version: baked {version + 1}, now {version + 2}" in caplog.text
    assert resumed[0] < states_per_source  # started over at source 0, not resumed at source 1


def test_a_stale_stores_bake_command_runs_as_printed_with_the_data_root_and_split(audio_only_root, tmp_path, capsys):
    """The command a stale store's refusal prints names the scenes' data root and the split (a bake without
    them reads data/scenes, or the train split, and fails); only the config, which the store cannot know, is
    a placeholder, and the command says so. Run as printed, with the config and the run's overrides, it bakes
    the file again."""
    import shlex

    import bake_spectrograms

    from asgf_nav.tasks.world import load_world

    cfg = audio_only_cfg(audio_only_root)
    world = load_world(cfg, "test")
    scene = world.scenes["tiny_room_test"]
    spectrogram = TorchSpectrogram(world.sample_rate)
    path = bake(tmp_path, scene, "telephone", world.sound("telephone"), spectrogram)
    fingerprint = json.loads(fingerprint_path(path).read_text())
    fingerprint["sound"]["sha256"] = "0" * 16  # baked from another waveform
    fingerprint_path(path).write_text(json.dumps(fingerprint))
    with pytest.raises(SpectrogramStoreError) as refused:
        SpectrogramStore(tmp_path, world, spectrogram).lookup(
            scene, "telephone", np.array([0]), scene.source_nodes[:1], np.array([0])
        )
    message = str(refused.value)
    command, _, note = message.partition("bake it again (this replaces it): ")[2].partition(" (")
    assert "<config>: the run's config" in note and "<split>" not in command + note
    words = shlex.split(command)
    assert words[:2] == ["python", "scripts/bake_spectrograms.py"]
    argv = [word.replace("<config>", "tiny_heard") for word in words[2:]] + AUDIO_ONLY_ACOUSTICS
    args = bake_spectrograms.build_parser().parse_intermixed_args(argv)
    assert Path(args.data_root) == audio_only_root and args.split == "test" and args.dataset == "tiny"
    assert args.scenes == ["tiny_room_test"] and args.sounds == ["telephone"] and Path(args.out) == tmp_path
    # as the world hears the responses (an evaluation's config may say otherwise), then the run's overrides
    assert args.overrides == ["task.keep_travel_time=false", *AUDIO_ONLY_ACOUSTICS]
    assert bake_spectrograms.main([*argv, "--dry-run"]) == 0  # as printed: it finds the scene and the stale file
    assert f"{path} was baked from other data" in capsys.readouterr().out
    # a caller that knows the run's split and config fills them in: no placeholder is left
    store = SpectrogramStore(tmp_path, world, spectrogram, split="test", config="tiny_heard")
    with pytest.raises(SpectrogramStoreError, match=r"--config tiny_heard --dataset tiny .*--split test") as refused:
        store.lookup(scene, "telephone", np.array([0]), scene.source_nodes[:1], np.array([0]))
    assert "<" not in str(refused.value)


def test_bake_script_reads_scenes_baked_without_views(audio_only_root, capsys):
    import bake_spectrograms

    # tiny_heard's task.sensors hold depth, which the bake never reads
    argv = ["--config", "tiny_heard", "--data-root", str(audio_only_root), "--split", "test", "--dry-run",
            *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    assert bake_spectrograms.main(argv) == 0
    assert f"1 scenes x 1 sounds into {audio_only_root / 'spectrograms'}: 1 files to bake" in capsys.readouterr().out


def test_bake_script_out_auto_is_the_data_roots_store(audio_only_root, capsys, tmp_path, monkeypatch):
    import bake_spectrograms

    monkeypatch.chdir(tmp_path)
    argv = ["--config", "tiny_heard", "--data-root", str(audio_only_root), "--split", "test", "--dry-run",
            *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    assert bake_spectrograms.main([*argv, "--out", "auto"]) == 0
    assert f"into {audio_only_root / 'spectrograms'}: 1 files to bake" in capsys.readouterr().out
    assert not (tmp_path / "auto").exists()
    # overrides on both sides of an option (parse_intermixed_args): the second one is not "unrecognized"
    assert bake_spectrograms.main(["scenes.workers=1", *argv, "task.spectrogram_store=elsewhere"]) == 0
    assert "into elsewhere: 1 files to bake" in capsys.readouterr().out


def test_bake_script_checks_the_default_store_before_baking(audio_only_root, tmp_path, capsys, monkeypatch):
    """The default store lies under the data root, which a lab may share read-only: a traceback after the
    world loaded, or a failure at the first file's lock; one fully baked there serves as it is."""
    import bake_spectrograms

    from asgf_nav import io

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder goes")  # as unwritable as a read-only root
    argv = ["--config", "tiny_heard", "--data-root", str(audio_only_root), "--split", "test",
            f"task.spectrogram_store={blocked / 'store'}", *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        bake_spectrograms.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "task.spectrogram_store (or --out DIR): cannot create directory" in err
    assert bake_spectrograms.main([*argv, "--dry-run"]) == 0  # what is missing can still be asked
    baked = [
        *argv[: -len(AUDIO_ONLY_ACOUSTICS) - 1],
        f"task.spectrogram_store={tmp_path / 'store'}",
        *AUDIO_ONLY_ACOUSTICS,
    ]
    assert bake_spectrograms.main(baked) == 0
    monkeypatch.setattr(io, "writable_dir_problem", lambda path: f"{path} is on a read-only file system")
    capsys.readouterr()
    assert bake_spectrograms.main(baked) == 0  # nothing to bake: the job script that always runs it goes on
    assert "0 files to bake" in capsys.readouterr().out


def test_bake_scripts_space_check_counts_what_partial_and_stale_files_hold_already(
    audio_only_root, tmp_path, monkeypatch, capsys
):
    """The free-space check asks for each file's size less the disk space its partial file holds (resumed or
    written again in place) and the stale file it replaces holds (removed before its bake)."""
    import shutil

    import bake_spectrograms

    from asgf_nav.tasks import spectrogram_bake
    from asgf_nav.tasks.world import load_world

    world = load_world(audio_only_cfg(audio_only_root), "test")
    scene = world.scenes["tiny_room_test"]
    final = store_path(tmp_path, scene, "telephone")
    size = store_bytes([scene], world.sample_rate)
    baked = []
    monkeypatch.setattr(spectrogram_bake, "bake_world", lambda *args: baked.append(args))  # main imports it late
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=size // 4))
    argv = ["--config", "tiny_heard", "--data-root", str(audio_only_root), "--split", "test", "--out", str(tmp_path),
            *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    assert bake_spectrograms.main(argv) == 2 and not baked
    assert "error: baking needs about" in capsys.readouterr().err
    final.parent.mkdir(parents=True)
    final.with_name("telephone.partial.npy").write_bytes(bytes(size // 2))  # half of it on disk already
    final.write_bytes(bytes(size // 2))  # a stale file (no fingerprint): removed before the bake
    assert bake_spectrograms.main(argv) == 0 and len(baked) == 1
    final.unlink()
    final.with_name("telephone.partial.npy").write_bytes(bytes(size - size // 4))  # a quarter short, a quarter free
    assert bake_spectrograms.main(argv) == 0 and len(baked) == 2
    final.with_name("telephone.partial.npy").write_bytes(bytes(size // 4))
    assert bake_spectrograms.main(argv) == 2 and len(baked) == 2
    error = capsys.readouterr().err
    assert f"more ({size // 4 / 1e6:.0f} MB of the files are on disk already) but {tmp_path} has" in error


def test_an_evaluation_reads_the_test_splits_baked_spectrograms(audio_only_root, tmp_path, monkeypatch):
    """``bake_spectrograms.py --split test`` is baked for evaluations: evaluate.py's env must be given it."""
    import evaluate

    from asgf_nav.eval import evaluator

    given = []

    class RecordingEnv(evaluator.BatchedAudioNavEnv):
        def __init__(self, *args, **kwargs) -> None:
            given.append(kwargs.get("spectrogram_store"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(evaluator, "BatchedAudioNavEnv", RecordingEnv)
    argv = ["--dataset", "tiny", "--data-root", str(audio_only_root), "--agent", "random", "--episodes", "2",
            "--out", str(tmp_path / "eval"), "task.test_episodes=2", "task.sensors=[spectrogram]",
            f"task.spectrogram_store={tmp_path / 'store'}", *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    assert evaluate.main(argv) == 0
    assert given == [tmp_path / "store"]


def test_a_store_read_out_of_open_files_is_no_reason_to_bake_it_again(tmp_path, monkeypatch) -> None:
    """A bake deletes and re-bakes a store it cannot read: one that could not be opened for want of file
    descriptors is fine and must stay."""
    import errno

    from asgf_nav.tasks import spectrogram_store

    path = tmp_path / "bell.npy"
    np.save(path, np.zeros((1, 1), np.float32))

    def out_of_files(path, mmap_mode=None):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(spectrogram_store, "load_npy", out_of_files)
    with pytest.raises(spectrogram_store.SpectrogramStoreError, match="the file is fine"):
        spectrogram_store.store_problem(path, {})
    assert path.exists()


def test_a_fingerprint_or_partial_bake_out_of_open_files_is_kept(tmp_path, monkeypatch) -> None:
    """The fingerprint file is the next file a store read opens, and a partial bake's state is read the same
    way: at the open-file limit neither may be taken for damage (a good store deleted, a partial bake restarted)."""
    import errno
    import json

    from asgf_nav.tasks import spectrogram_bake, spectrogram_store

    def out_of_files(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    sidecar = tmp_path / "bell.json"
    sidecar.write_text("{}")
    monkeypatch.setattr(Path, "read_text", out_of_files)
    with pytest.raises(spectrogram_store.SpectrogramStoreError, match="bell.json: Too many open files"):
        spectrogram_store.read_json_file(sidecar)
    monkeypatch.undo()
    partial, state = tmp_path / "bell.partial.npy", tmp_path / "bell.state.json"
    np.save(partial, np.zeros((1, 1), np.float32))
    state.write_text(json.dumps({"fingerprint": {"scene": {"shape": [1, 1]}}, "sources_done": 1}))
    monkeypatch.setattr(spectrogram_bake, "load_npy", out_of_files)
    with pytest.raises(spectrogram_store.SpectrogramStoreError, match="the file is fine"):
        spectrogram_bake._resumable_sources(partial, state, {"scene": {"shape": [1, 1]}})
    assert partial.exists()


def test_rir_files_a_bake_read_as_silence_are_counted_by_the_world_that_opens_its_store(tmp_path, monkeypatch):
    """A store baked while SoundSpaces RIR files were missing (scenes.rir_on_missing=silence) serves silence for
    them without reading an RIR: its fingerprint file lists them (those of an interrupted bake too), and the
    world that opens it counts them as its own, under its own root; a world with rir_on_missing=error refuses
    it; a store file of an earlier release, which lists none, still opens."""
    from dataclasses import replace
    from types import SimpleNamespace

    from asgf_nav.scenes import soundspaces as ss

    monkeypatch.setattr(ss, "_SILENCED", {})
    monkeypatch.setattr(ss, "atexit", SimpleNamespace(register=lambda hook: None))
    scene = grid_scene("room", sample_rate=SR, dataset="mp3d")
    first = int(scene.source_nodes[0])
    missing = {f"{ss.azimuth_for_yaw(yaw)}/{receiver}_{first}.wav" for receiver, yaw in ((2, 1), (3, 0))}

    def read_rir(path: Path, sample_rate: int) -> np.ndarray:  # node ids are indices: {receiver}_{source}.wav
        if f"{path.parent.name}/{path.name}" in missing:
            raise ss.SoundSpacesDataError(f"binaural RIR {path} does not exist")
        rir = np.zeros((sample_rate // 8, 2), dtype=np.float32)
        rir[1 + int(path.stem.split("_")[0]), :] = 1.0
        return rir

    monkeypatch.setattr(ss, "read_rir", read_rir)

    def soundspaces_scene(root: Path, on_missing: str):  # a new world: nothing counted yet
        paths = ss.SoundSpacesPaths(root, "mp3d")
        rirs = ss.SoundSpacesRirs(paths, "room", np.arange(scene.num_nodes), scene.source_nodes, on_missing=on_missing)
        return replace(scene, rir=rirs.rir), paths.rir_dir("room")

    wave = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    spectrogram = TorchSpectrogram(SR)
    done = []

    def stop_in_second_source(n: int) -> None:
        done.append(n)
        if sum(done) > scene.num_nodes * 4 + 10:
            raise KeyboardInterrupt

    baking, _ = soundspaces_scene(tmp_path / "a", "silence")
    with pytest.raises(KeyboardInterrupt):
        bake(tmp_path / "store", baking, "bell", wave, spectrogram, batch=8, progress=stop_in_second_source)
    resumed, _ = soundspaces_scene(tmp_path / "a", "silence")  # another process: the first source is not read
    final = bake(tmp_path / "store", resumed, "bell", wave, spectrogram, batch=8)
    assert json.loads(fingerprint_path(final).read_text())["rirs_replaced_by_silence"] == sorted(missing)

    moved, rir_dir = soundspaces_scene(tmp_path / "b", "silence")  # the same data under another root
    store = SpectrogramStore(tmp_path / "store", SimpleNamespace(sound=lambda name: wave), spectrogram)
    heard = store.lookup(moved, "bell", np.array([2, 4]), np.array([first, first]), np.array([1, 1]))
    assert not heard[0].any() and heard[1].any()  # receiver 2's file was silence when baked, receiver 4's not
    assert ss.silenced_rir_files([moved]) == {"mp3d/room": {str(rir_dir / name) for name in missing}}

    refusing, _ = soundspaces_scene(tmp_path / "b", "error")
    store = SpectrogramStore(tmp_path / "store", SimpleNamespace(sound=lambda name: wave), spectrogram)
    with pytest.raises(SpectrogramStoreError, match=r"baked with 2 binaural RIR files replaced by silence .*error"):
        store.lookup(refusing, "bell", np.array([4]), np.array([first]), np.array([1]))

    earlier = json.loads(fingerprint_path(final).read_text())
    del earlier["rirs_replaced_by_silence"]
    fingerprint_path(final).write_text(json.dumps(earlier))
    opened, _ = soundspaces_scene(tmp_path / "b", "silence")
    store = SpectrogramStore(tmp_path / "store", SimpleNamespace(sound=lambda name: wave), spectrogram)
    assert store.lookup(opened, "bell", np.array([4]), np.array([first]), np.array([1])) is not None

    earlier["rirs_replaced_by_silence"] = "270/2_0.wav"  # not a list: read as none, a silent file would pass
    fingerprint_path(final).write_text(json.dumps(earlier))
    store = SpectrogramStore(tmp_path / "store", SimpleNamespace(sound=lambda name: wave), spectrogram)
    with pytest.raises(SpectrogramStoreError, match=r"is damaged \(its rirs_replaced_by_silence is not a list"):
        store.lookup(opened, "bell", np.array([4]), np.array([first]), np.array([1]))

    # a bake under rir_on_missing=error does not finish a silence bake's partial file (its result would list
    # files that policy refuses): it starts over, and meets the missing files itself
    done.clear()
    baking, _ = soundspaces_scene(tmp_path / "a", "silence")
    with pytest.raises(KeyboardInterrupt):
        bake(tmp_path / "other", baking, "bell", wave, spectrogram, batch=8, progress=stop_in_second_source)
    strict, _ = soundspaces_scene(tmp_path / "a", "error")
    with pytest.raises(ss.SoundSpacesDataError, match="does not exist"):
        bake(tmp_path / "other", strict, "bell", wave, spectrogram, batch=8)


def test_a_missing_start_reads_as_the_emission_only_for_baked_acoustics() -> None:
    """Baked responses that keep the travel time record no start: named as the emission. Other sources (a
    SoundSpaces store in a shared root) have no start at all, and say so."""
    from asgf_nav.tasks.spectrogram_store import fingerprint_differences

    cut = {"rirs": {"source": "baked acoustics", "start": "straight-line arrival"}}
    kept = {"rirs": {"source": "baked acoustics"}}
    soundspaces = {"rirs": {"source": "soundspaces"}}
    assert fingerprint_differences(kept, cut) == (
        "rirs.start: baked 'emission' (task.keep_travel_time=true), now 'straight-line arrival'"
    )
    assert fingerprint_differences(soundspaces, cut) == (
        "rirs.source: baked 'soundspaces', now 'baked acoustics'; "
        "rirs.start: baked '(none)', now 'straight-line arrival'"
    )
