"""Selective DoA head's training data: rendered room responses, RIR pools and mixed examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from doa_helpers import SR, _source_at

from asgf_nav.acoustics.binaural import EarlyPaths
from asgf_nav.models.doa.classical import HrtfTemplateDoa
from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.data import DoaBatch, DoaExampleSampler
from asgf_nav.models.doa.features import circular_distance
from asgf_nav.models.doa.rooms import (
    PAIR_SPACING,
    SPEED_OF_SOUND,
    RirPool,
    first_reflection,
    has_direct_path,
    render_pair_rir,
    render_shoebox_rir,
    scene_pool,
    shoebox_pool,
)
from asgf_nav.scenes.store import SceneStoreError
from asgf_nav.sounds.bank import SoundBank


def test_shoebox_rir_puts_a_left_source_in_the_left_ear():
    rng = np.random.default_rng(0)
    room, receiver = np.array([6.0, 3.0, 6.0]), np.array([3.0, 1.5, 3.0])
    for yaw in (0.0, 90.0, 230.0):
        left = render_shoebox_rir(room, receiver, _source_at(receiver, 90.0, yaw), yaw, 0.7, 6.0, 0.4, SR, 4000, rng)
        right = render_shoebox_rir(room, receiver, _source_at(receiver, 270.0, yaw), yaw, 0.7, 6.0, 0.4, SR, 4000, rng)
        early = slice(0, 200)
        assert (left[early, 0] ** 2).sum() > 3 * (left[early, 1] ** 2).sum()
        assert (right[early, 1] ** 2).sum() > 3 * (right[early, 0] ** 2).sum()
        assert np.argmax(np.abs(left[:, 0])) < np.argmax(np.abs(left[:, 1]))  # the near ear hears it first


def _tdoa_us(rir: np.ndarray, upsample: int = 32) -> float:
    """Left-minus-right arrival time (microseconds) of the strongest common component of a (L, 2) RIR."""
    n = 2 * rir.shape[0]
    cross = np.fft.rfft(rir[:, 0], n) * np.conj(np.fft.rfft(rir[:, 1], n))
    cc = np.fft.irfft(cross, n * upsample)
    span = 40 * upsample
    lag = np.argmax(np.concatenate([cc[-span:], cc[: span + 1]])) - span
    return lag / (SR * upsample) * 1e6


def test_pair_receiver_delays_follow_the_array_geometry():
    rng = np.random.default_rng(0)
    room, receiver = np.array([8.0, 3.0, 8.0]), np.array([4.0, 1.5, 4.0])
    for yaw in (0.0, 130.0):
        for az in (0.0, 30.0, 75.0, 90.0, 150.0, 300.0):
            # no reflections and no tail: the direct path alone, at a fractional inter-microphone delay
            rir = render_pair_rir(room, receiver, _source_at(receiver, az, yaw), yaw, 0.0, 300.0, 0.3, SR, 2000, rng)
            expected = -PAIR_SPACING * np.sin(np.deg2rad(az)) / SPEED_OF_SOUND * 1e6  # left first when left
            assert _tdoa_us(rir) == pytest.approx(expected, abs=3.0), (yaw, az)
    reverberant = render_pair_rir(room, receiver, _source_at(receiver, 90.0, 0.0), 0.0, 0.8, 0.0, 0.5, SR, 4000, rng)
    assert np.abs(reverberant[2000:]).max() > 0  # reflections and the diffuse tail are there


def test_direct_to_reverberant_ratio_falls_with_reverberation():
    rng = np.random.default_rng(1)
    room, receiver = np.array([8.0, 3.0, 8.0]), np.array([4.0, 1.5, 4.0])
    source = _source_at(receiver, 60.0, 0.0, distance=3.0)
    rirs = [
        render_pair_rir(room, receiver, source, 0.0, reflection, drr, 0.5, SR, 4000, rng)
        for reflection, drr in ((0.0, 300.0), (0.6, 6.0), (0.9, -3.0))
    ]
    pool = RirPool(np.stack(rirs)[:, None].repeat(2, axis=1), np.full((3, 2), 60.0), SR)
    drr = pool.direct_to_reverberant_db()[:, 0]
    assert drr[0] > 15  # anechoic: the direct sound (and the fractional delay's sinc ringing) is all there is
    assert drr[0] > drr[1] > drr[2]
    assert drr[2] < 0  # a tail 3 dB above the direct sound plus strong reflections


def test_direct_sound_windows_and_the_direct_sound_reference():
    from asgf_nav.eval.doa_eval import direct_sound_reference

    rng = np.random.default_rng(3)
    room, receiver = np.array([8.0, 3.0, 8.0]), np.array([4.0, 1.5, 4.0])
    azimuths = np.array([[10.0, 100.0, 170.0], [220.0, 300.0, 355.0]])
    rirs = np.stack(
        [
            np.stack(
                [
                    render_shoebox_rir(
                        room, receiver, _source_at(receiver, az, 0.0, distance=2.5), 0.0, 0.8, 0.0, 0.4, SR, 2000, rng
                    )
                    for az in row
                ]
            )
            for row in azimuths
        ]
    )  # direct path + equal-energy tail
    pool = RirPool(rirs, azimuths, SR)
    windows = pool.direct_sound(direct_ms=2.5, lead_ms=1.0)
    assert windows.shape == (2, 3, 56, 2)
    for p, j in ((0, 0), (1, 2)):  # a contiguous stretch of the response: 1 ms before its onset to 2.5 ms after
        rir = rirs[p, j]
        starts = [k for k in range(2000 - 56) if np.array_equal(rir[k : k + 56], windows[p, j])]
        assert len(starts) == 1
        energy = (rir.astype(np.float64) ** 2).sum(axis=1)
        assert energy[: starts[0] + 16].max() < 0.05 * energy.max() <= energy[starts[0] + 16]
        assert starts[0] + 16 <= np.argmax(energy) < starts[0] + 56  # the direct path's peak is inside
        assert 0 <= starts[0] + 16 - 2.5 / SPEED_OF_SOUND * SR < 20  # the travel time of 2.5 m plus the HRIR lead
    reference = direct_sound_reference(pool, HrtfTemplateDoa(SR))
    assert reference["responses"] == 6 and reference["acc5"] == 100.0  # the tail is cut off
    assert reference["waveform"]["acc5"] == reference["waveform_2ms"]["acc5"] == 100.0
    # the same template matcher on the whole responses, tail included, does worse
    whole = [HrtfTemplateDoa(SR)(r.T.astype(np.float64)) for r in rirs.reshape(-1, 2000, 2)]
    assert circular_distance(np.array(whole), azimuths.ravel()).mean() > reference["mae"]


def test_pair_pool_is_labelled_with_the_front_hemisphere_angle(tmp_path):
    from asgf_nav.models.doa.pools import rir_pool

    pool = shoebox_pool(4, 3, seed=1, progress=False, receiver="pair")
    assert np.all(np.cos(np.deg2rad(pool.azimuth)) >= -1e-9)  # never behind the array
    for p in range(4):  # the labelled lateral angle is the one the direct path's delay measures
        for j in range(3):
            rir = pool.rirs[p, j]
            onset = int(np.argmax(np.abs(rir).max(axis=1) > 0.3 * np.abs(rir).max()))
            direct = rir[max(onset - 16, 0) : onset + 16]
            expected = -PAIR_SPACING * np.sin(np.deg2rad(pool.azimuth[p, j])) / SPEED_OF_SOUND * 1e6
            assert _tdoa_us(direct) == pytest.approx(expected, abs=15.0), (p, j)
    with pytest.raises(ValueError, match="receiver must be one of"):
        shoebox_pool(1, 2, seed=1, progress=False, receiver="dummy-head")
    cached = rir_pool(DoaTrainConfig(rooms="shoebox_pair", pool_dir=str(tmp_path), sources_per_pose=2), "train", 2, 5)
    assert (tmp_path / "shoebox_pair_train_2x2_s5.npz").is_file()
    assert np.all(np.cos(np.deg2rad(cached.azimuth)) >= -1e-9) and cached.line_of_sight.all()
    from asgf_nav.models.doa import pools

    # each receiver's renderer has its own version: the head's tail changed at version 2, the pair's did not
    assert cached.source == f"shoebox_pair:{pools.SHOEBOX_PAIR_POOL_VERSION}" == "shoebox_pair:1"
    assert pools.pool_source(DoaTrainConfig(), "shoebox", "train") == f"shoebox:{pools.SHOEBOX_POOL_VERSION}"


def test_scene_pool_labels_from_node_positions():
    class FakeScene:
        name = "line"
        positions = np.array([[0.0, 0, 0], [-2.0, 0, 0], [0, 0, -2.0], [2.0, 0, 0], [0, 0, 2.0]])
        num_nodes = 5

    class FakeRirs:
        sample_rate = 32000
        source_nodes = np.arange(5)

        def rir(self, receiver: int, source: int, yaw_index: int) -> np.ndarray:
            out = np.zeros((1000, 2), dtype=np.float32)
            out[source, 0] = 1.0
            return out

        def paths(self, receiver: int, source: int) -> EarlyPaths:
            straight = np.linalg.norm(FakeScene.positions[receiver] - FakeScene.positions[source])
            # a wall between nodes 1 and 3: only a reflection, 1 m longer than the straight line, arrives
            first = straight + (1.0 if {receiver, source} == {1, 3} else 0.0)
            delay = np.array([first, first + 3.0]) / SPEED_OF_SOUND
            return EarlyPaths(delay, np.zeros(2), np.zeros(2), np.ones((2, 1)))

    pool = scene_pool(FakeScene(), FakeRirs(), num_poses=6, sources_per_pose=3, seed=0, rir_seconds=0.02)
    assert pool.rirs.shape == (6, 3, 320, 2)
    assert np.all(pool.rirs.max(axis=(2, 3)) > 0.1)  # resampled to 16 kHz, impulse kept
    # every label matches the geometry of some receiver/yaw: angles are multiples of 45 degrees here
    assert np.allclose(np.mod(pool.azimuth, 45.0) * np.mod(-pool.azimuth, 45.0), 0.0, atol=1e-6)

    class CodedRirs(FakeRirs):
        """The impulse's sample tells which receiver, source and yaw the pool rendered."""

        def rir(self, receiver: int, source: int, yaw_index: int) -> np.ndarray:
            out = np.zeros((1000, 2), dtype=np.float32)
            out[2 * (20 * (5 * receiver + source) + 4 * yaw_index), 0] = 1.0
            return out

    # habitat: yaw 0 faces -Z, azimuth counter-clockwise from the heading (90 = left), turning left adds 90
    # to the yaw; node 0 at the origin, 1 at -X, 2 at -Z, 3 at +X, 4 at +Z (2 m each)
    at_yaw_0 = {0: {1: 90.0, 2: 0.0, 3: 270.0, 4: 180.0}, 1: {0: 270.0, 2: 315.0, 3: 270.0, 4: 225.0}}
    coded = scene_pool(FakeScene(), CodedRirs(), num_poses=40, sources_per_pose=3, seed=1, rir_seconds=0.07)
    checked = 0
    for p in range(coded.num_poses):
        for j in range(3):
            code = int(np.argmax(coded.rirs[p, j, :, 0]))  # 16 kHz: half the sample
            receiver, source, yaw = code // 20 // 5, code // 20 % 5, code % 20 // 4
            if receiver in at_yaw_0:
                expected = (at_yaw_0[receiver][source] - 90.0 * yaw) % 360.0
                assert coded.azimuth[p, j] == pytest.approx(expected, abs=1e-9), (receiver, source, yaw)
                checked += 1
    assert checked >= 10
    # line of sight: exactly the pairs whose first arrival travels the straight distance
    assert pool.line_of_sight.dtype == bool and pool.line_of_sight.shape == (6, 3)
    positions, rirs = FakeScene.positions, FakeRirs()
    assert has_direct_path(rirs, positions, 0, 1) and not has_direct_path(rirs, positions, 1, 3)
    assert has_direct_path(rirs, positions, 3, 3)  # on the source's own node (the renderer's direct sound)
    gap, level = first_reflection(rirs, positions, 0, 1)  # the second path: 3 m longer, as loud
    assert gap == pytest.approx(3.0 / SPEED_OF_SOUND) and level == pytest.approx(0.0)
    assert first_reflection(rirs, positions, 1, 3) is None  # no line of sight


def test_rir_pool_keeps_line_of_sight_through_save_and_load(tmp_path):
    pool = shoebox_pool(3, 2, seed=2, progress=False)
    assert pool.line_of_sight.all()  # an empty shoebox hides nothing
    pool.line_of_sight = np.array([[True, False], [True, True], [False, True]])
    pool.save(tmp_path / "pool.npz")
    assert np.array_equal(RirPool.load(tmp_path / "pool.npz").line_of_sight, pool.line_of_sight)
    np.savez(tmp_path / "old.npz", rirs=pool.rirs, azimuth=pool.azimuth, sample_rate=pool.sample_rate)
    assert RirPool.load(tmp_path / "old.npz").line_of_sight is None  # saved before the flag existed
    both = RirPool.concat([pool, shoebox_pool(2, 2, seed=3, progress=False)])
    assert both.num_poses == 5 and np.array_equal(both.line_of_sight[:3], pool.line_of_sight)
    assert RirPool.concat([pool, RirPool.load(tmp_path / "old.npz")]).line_of_sight is None
    sampler = DoaExampleSampler(SoundBank.load(), pool, "train", clip_seconds=0.1)
    batch = sampler.sample(40, 0.0, np.random.default_rng(0))
    assert batch.line_of_sight.dtype == torch.bool and not batch.line_of_sight.all()
    with pytest.raises(ValueError, match="line_of_sight"):
        RirPool(pool.rirs, pool.azimuth, pool.sample_rate, np.ones((2, 2), dtype=bool))


def test_line_of_sight_targets_draw_only_audible_direct_paths():
    pool = shoebox_pool(3, 3, seed=2, progress=False)
    pool.line_of_sight = np.array([[True, False, False], [False, False, False], [False, True, True]])
    bank = SoundBank.load()
    batch = DoaExampleSampler(bank, pool, "train", clip_seconds=0.1, targets="line_of_sight").sample(
        60, 0.0, np.random.default_rng(1)
    )
    assert batch.line_of_sight.all()
    visible = {float(a) for a in pool.azimuth[pool.line_of_sight].astype(np.float32)}
    assert {float(a) for a in batch.azimuth} == visible  # every audible source is drawn, nothing else
    assert (batch.distractor_azimuth != batch.azimuth).all()
    # the default keeps its draws (the benchmark's clips) and includes sources behind walls
    every = DoaExampleSampler(bank, pool, "train", clip_seconds=0.1).sample(60, 0.0, np.random.default_rng(1))
    assert not every.line_of_sight.all()
    with pytest.raises(ValueError, match="targets"):
        DoaExampleSampler(bank, pool, "train", targets="visible")


def test_sampler_mixes_at_the_requested_snr_and_respects_splits(bank):
    pool = shoebox_pool(4, 3, seed=5, progress=False)
    sampler = DoaExampleSampler(bank, pool, "test")
    assert set(sampler.targets) <= set(bank.names("test"))
    batch = sampler.sample(6, -5.0, np.random.default_rng(0))
    assert batch.mixture.shape == (6, 2, SR // 2) and batch.prompt.shape == (6, SR // 2)
    assert torch.allclose(batch.mixture.pow(2).mean(dim=(1, 2)), torch.ones(6), atol=1e-3)
    distractor = batch.mixture - batch.target
    snr = 10 * torch.log10(batch.target.pow(2).sum(dim=(1, 2)) / distractor.pow(2).sum(dim=(1, 2)))
    assert torch.allclose(snr, torch.full((6,), -5.0), atol=0.05)
    assert set(np.round(batch.azimuth.numpy(), 4)) <= set(np.round(pool.azimuth.ravel().astype(np.float32), 4))


def _reference_example(sampler: DoaExampleSampler, draw) -> dict[str, np.ndarray]:
    """One example rendered the plain way (numpy, float64, one example at a time) from its draws."""
    clip, hop = sampler.clip, sampler.clip // 8
    names = (draw.target, draw.distractor, draw.prompt)
    dry = {n: sampler._waves[sampler._wave_row[n]].double().numpy() for n in names}

    def received(name, source):
        rir = sampler.pool.rirs[draw.pose, source].astype(np.float64)
        n = dry[name].size + rir.shape[0] - 1
        return np.stack([np.convolve(dry[name], rir[:, ear]) for ear in range(2)])[:, :n]

    def loudest(signal):  # energies as differences of a running sum: exact ties break the same way
        energy = np.concatenate([[0.0], np.cumsum(np.reshape(signal**2, (-1, signal.shape[-1])).sum(0))])
        starts = np.arange(0, max(1, signal.shape[-1] - clip + 1), hop)
        return int(starts[int(np.argmax(energy[starts + clip] - energy[starts]))])

    rx_t, rx_d = received(draw.target, draw.target_source), received(draw.distractor, draw.distractor_source)
    seg_t = rx_t[:, loudest(rx_t) :][:, :clip]
    s_d = draw.distractor_start
    quiet = np.sum(rx_d[:, s_d : s_d + clip] ** 2) < 0.25 * np.sum(rx_d**2) * clip / rx_d.shape[1]
    seg_d = rx_d[:, (loudest(rx_d) if quiet else s_d) :][:, :clip]
    seg_d = seg_d * np.sqrt(np.sum(seg_t**2) / np.sum(seg_d**2) * 10 ** (-draw.snr_db / 10))
    mix = seg_t + seg_d
    scale = 1 / np.sqrt(np.mean(mix**2))
    prompt = dry[draw.prompt][loudest(dry[draw.prompt]) :][:clip]
    return {
        "mixture": mix * scale,
        "target": seg_t * scale,
        "prompt": prompt / np.sqrt(np.mean(prompt**2)),
        "quiet": quiet,
    }


def test_loudest_distractor_windows_change_only_the_distractor(bank):
    pool = shoebox_pool(3, 3, seed=4, progress=False)
    drawn = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25).sample(16, 0.0, np.random.default_rng(3))
    loudest = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, distractor_window="loudest").sample(
        16, 0.0, np.random.default_rng(3)
    )
    for name in ("prompt", "category", "azimuth", "distractor_azimuth"):
        assert torch.equal(getattr(drawn, name), getattr(loudest, name)), name
    # the target clip is the same stretch (the mixtures are scaled to unit RMS, so compare shapes)
    cos = torch.nn.functional.cosine_similarity(drawn.target.flatten(1), loudest.target.flatten(1))
    assert torch.allclose(cos, torch.ones(16), atol=1e-5)
    assert not torch.allclose(drawn.mixture, loudest.mixture)
    with pytest.raises(ValueError, match="distractor_window must be one of"):
        DoaExampleSampler(bank, pool, "train", distractor_window="random")


def test_batched_rendering_matches_a_per_example_reference(bank):
    pool = shoebox_pool(4, 3, seed=5, progress=False)
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25)
    sampler._waves[:, SR // 2 :] = 0.0  # silent second halves: some distractor clips start in silence
    batch = sampler.sample(24, (-5.0, 5.0), np.random.default_rng(4))
    draw_rng = np.random.default_rng(4)
    refs = [_reference_example(sampler, sampler._draw((-5.0, 5.0), draw_rng)) for _ in range(24)]
    assert 0 < sum(r["quiet"] for r in refs) < 24  # both branches of the distractor's window are exercised
    for field in ("mixture", "target", "prompt"):
        expected = torch.from_numpy(np.stack([r[field] for r in refs])).float()
        assert torch.allclose(getattr(batch, field), expected, atol=1e-4), field
    # float32 rendering (the default off the CPU) picks the same windows and agrees to float32 precision
    single = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, dtype=torch.float32)
    single._waves[:, SR // 2 :] = 0.0
    fast = single.sample(24, (-5.0, 5.0), np.random.default_rng(4))
    for field in DoaBatch.__dataclass_fields__:
        assert torch.allclose(getattr(fast, field).double(), getattr(batch, field).double(), atol=1e-4), field


def test_cached_pools_are_rebuilt_when_their_responses_would_differ(tmp_path, monkeypatch):
    from asgf_nav.models.doa import pools

    cfg = DoaTrainConfig(rooms="shoebox", pool_dir=str(tmp_path), sources_per_pose=2)
    now, later = f"shoebox:{pools.SHOEBOX_POOL_VERSION}", f"shoebox:{pools.SHOEBOX_POOL_VERSION + 1}"
    first = pools.rir_pool(cfg, "train", 2, 5)
    assert first.source == now and RirPool.load(tmp_path / "shoebox_train_2x2_s5.npz").source == now
    built = []
    monkeypatch.setattr(pools, "shoebox_pool", lambda *a, **k: built.append(a) or shoebox_pool(*a, **k))
    pools.rir_pool(cfg, "train", 2, 5)
    assert built == []  # same renderer: the cache serves
    monkeypatch.setattr(pools, "SHOEBOX_POOL_VERSION", pools.SHOEBOX_POOL_VERSION + 1)
    assert pools.rir_pool(cfg, "train", 2, 5).source == later and len(built) == 1
    cached = tmp_path / "shoebox_train_2x2_s5.npz"
    overwritten = cached.read_bytes()
    overwritten = overwritten[:200] + b"\xff" * 64 + overwritten[264:]  # a member's bytes: its CRC fails
    for damaged in (b"PK\x03\x04 cut short", b"", overwritten):  # an unreadable cache is rendered again
        cached.write_bytes(damaged)
        assert pools.rir_pool(cfg, "train", 2, 5).source == later
    assert len(built) == 4 and RirPool.load(cached).source == later
    killed_write = tmp_path / ".shoebox_train_2x2_s5.npz.0a1b2c3d.tmp"  # left by a write killed outright
    other_pool = tmp_path / ".shoebox_train_9x2_s5.npz.0a1b2c3d.tmp"  # another run may be writing it
    killed_write.write_bytes(b"x" * 100)
    other_pool.write_bytes(b"x")
    cached.unlink()  # the killed write left no pool: the run that renders it removes the temporary first
    pools.rir_pool(cfg, "train", 2, 5)
    assert not killed_write.exists() and other_pool.exists() and len(built) == 5


def test_a_current_pool_is_read_without_its_lock_and_only_a_render_takes_it(tmp_path, monkeypatch):
    """A complete pool in a directory nobody here can write (shared read-only, without its hidden lock file)
    is read as it is; the lock is taken only to render one, and the pool is checked again under it."""
    from contextlib import contextmanager

    from asgf_nav.models.doa import pools

    cfg = DoaTrainConfig(rooms="shoebox", pool_dir=str(tmp_path), sources_per_pose=2)
    first = pools.rir_pool(cfg, "train", 2, 5)
    lock = tmp_path / ".shoebox_train_2x2_s5.npz.lock"
    lock.unlink()

    def read_only(path, what, busy=None):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(pools, "exclusive_lock", read_only)
    again = pools.rir_pool(cfg, "train", 2, 5)
    assert np.array_equal(again.rirs, first.rirs) and again.source == first.source and not lock.exists()

    path = tmp_path / "shoebox_train_2x2_s5.npz"
    taken = []

    @contextmanager
    def rendered_meanwhile(lock_path, what, busy=None):  # another run renders it while this one waits
        taken.append(lock_path)
        first.save(path)
        yield True

    path.unlink()
    built = []
    monkeypatch.setattr(pools, "exclusive_lock", rendered_meanwhile)
    monkeypatch.setattr(pools, "shoebox_pool", lambda *a, **k: built.append(a) or shoebox_pool(*a, **k))
    assert np.array_equal(pools.rir_pool(cfg, "train", 2, 5).rirs, first.rirs)
    assert taken == [lock] and built == []  # missing: locked, then found rendered under the lock, not rendered twice


def test_scene_pool_source_follows_the_bake_and_the_renderer(monkeypatch):
    from asgf_nav.acoustics import rir
    from asgf_nav.models.doa import pools
    from asgf_nav.models.doa.pools import pool_source
    from asgf_nav.scenes import scene

    metas = {"rays": 3000, "layout_digest": "abc"}

    class FakeStore:
        def meta(self, stage: str) -> dict:
            assert stage == "acoustics"
            return dict(metas)

    monkeypatch.setattr(
        scene.Scene, "open", staticmethod(lambda root, dataset, name: type("S", (), {"store": FakeStore()}))
    )
    monkeypatch.setattr(pools, "split_scene_names", lambda cfg, split: ["tiny_apartment"])
    cfg = DoaTrainConfig(rooms="scenes", scenes_root="DATA", scenes_dataset="tiny")
    base = pool_source(cfg, "scenes", "train")
    assert base == pool_source(cfg, "scenes", "train") and base.startswith("scenes:")
    metas["layout_digest"] = "abd"  # the layout was rebuilt
    rebuilt = pool_source(cfg, "scenes", "train")
    monkeypatch.setattr(rir, "RENDER_VERSION", rir.RENDER_VERSION + 1)
    assert len({base, rebuilt, pool_source(cfg, "scenes", "train")}) == 3


def test_scene_pools_of_a_partial_bake_name_every_scene_still_to_bake(tmp_path):
    """The pools use every scene of the split: one not baked is named with the command that bakes it, not
    as a damaged scene to bake 'again' with --force."""
    from asgf_nav.models.doa.pools import pool_source
    from asgf_nav.scenes.presets import get_preset
    from asgf_nav.scenes.store import SceneStoreError, scene_dir

    names = get_preset("replica").split_scenes("test")
    baked = scene_dir(tmp_path, "replica", names[0])
    baked.mkdir(parents=True)
    (baked / "manifest.json").write_text("{}")
    cfg = DoaTrainConfig(rooms="scenes", scenes_root=str(tmp_path), scenes_dataset="replica")
    with pytest.raises(SceneStoreError) as error:
        pool_source(cfg, "scenes", "test")
    assert f"{names[1:]} are not baked under {tmp_path}" in str(error.value) and "--force" not in str(error.value)
    assert str(error.value).endswith(f"--stages layout acoustics --data-root {tmp_path} --scenes {' '.join(names[1:])}")


def test_seeds_whose_training_pool_repeats_the_test_poses_are_refused():
    from asgf_nav.models.doa.config import TEST_POOL_SEED, VAL_POOL_SEED, train_pool_seed

    assert train_pool_seed(0) == 1000
    for seed in (VAL_POOL_SEED - 1000, TEST_POOL_SEED - 1000):
        with pytest.raises(ValueError, match=f"DoA seed {seed}"):
            train_pool_seed(seed)
    with pytest.raises(ValueError, match="clip_seconds 1.5"):
        DoaExampleSampler(SoundBank.load(), shoebox_pool(1, 2, seed=1, progress=False), "train", clip_seconds=1.5)


def test_draws_put_the_distractor_at_another_source_of_another_category(sampler_parts):
    from asgf_nav.models.doa.data import DoaExampleSampler

    bank, pool = sampler_parts
    for split in ("train", "test"):
        sampler = DoaExampleSampler(bank, pool, split, clip_seconds=0.1)
        rng = np.random.default_rng(0)
        for _ in range(750):  # a same-category distractor in 1 draw of a few hundred would be caught
            d = sampler._draw(0.0, rng)
            assert d.target_source != d.distractor_source  # module docstring: "at two source positions"
            assert bank.category(d.distractor) != bank.category(d.target)
            assert d.distractor in bank.names(split)
            # the prompt: another instance of the target's category from the training split
            assert d.prompt in bank.names("train") and bank.category(d.prompt) == bank.category(d.target)
            assert bank.instance(d.prompt) != bank.instance(d.target) and d.prompt != d.target


def test_the_category_label_is_the_targets(sampler_parts):
    from asgf_nav.models.doa.data import DoaExampleSampler

    bank, pool = sampler_parts
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.1)
    batch = sampler.sample(24, 0.0, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    draws = [sampler._draw(0.0, rng) for _ in range(24)]
    expected = [sampler.categories.index(bank.category(d.target)) for d in draws]
    assert batch.category.tolist() == expected


def test_the_loudest_window_may_end_at_the_rows_last_sample():
    from asgf_nav.models.doa.data import loudest_window

    signal = torch.zeros(2, 2, 1600, dtype=torch.float64)
    signal[0, :, 1200:1600] = 1.0  # row 0: all energy in its last 400 samples
    signal[1, :, 800:1200] = 1.0  # row 1 is 1200 long: its last window starts at 800
    starts = loudest_window(signal, torch.tensor([1600, 1200]), 400, 50)
    assert starts.tolist() == [1200, 800]


def test_draws_cover_every_pose_and_source_and_the_distractors_reverberant_tail(
    sampler_parts: tuple[SoundBank, RirPool],
) -> None:
    """Plain draws reach every pose and source of the pool, and the distractor's start is drawn over its
    whole received signal (the dry sound plus the response's length - 1), reverberant tail included."""
    bank, pool = sampler_parts  # 4 poses x 3 sources, 4000-sample responses
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.1)
    rng = np.random.default_rng(0)
    draws = [sampler._draw(0.0, rng) for _ in range(200)]
    assert {d.pose for d in draws} == set(range(pool.num_poses))
    assert {d.target_source for d in draws} == {d.distractor_source for d in draws} == set(range(3))
    sizes = np.array([sampler._wave_size[sampler._wave_row[d.distractor]] for d in draws])
    starts = np.array([d.distractor_start for d in draws])
    received = sizes + pool.rirs.shape[2] - 1
    assert np.all(starts < received - sampler.clip)
    assert np.any(starts > sizes - sampler.clip)  # some clips start in the tail after the dry sound ends


def test_augmented_draws_give_each_sound_its_own_timbre(bank: SoundBank, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timbres are drawn in the order target, distractor, prompt: with only the distractor's changed (a
    faster rate and a tilt), the target and prompt clips are the plain ones, the mixture is not, and the
    distractor's start is drawn inside its own (shorter) replayed signal."""
    import asgf_nav.models.doa.data as doa_data
    from asgf_nav.models.doa.augment import identity_timbre, resampled_length

    changed = identity_timbre()
    changed[:2] = [1.19, 3.0]
    timbres = iter([identity_timbre(), changed, identity_timbre()] * 40)
    pool = shoebox_pool(3, 3, seed=4, progress=False)
    plain = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25).sample(12, 0.0, np.random.default_rng(2))
    monkeypatch.setattr(doa_data, "random_timbre", lambda rng: next(timbres))
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, augment=True)
    same = sampler.sample(12, 0.0, np.random.default_rng(2))
    cos = torch.nn.functional.cosine_similarity(same.target.flatten(1), plain.target.flatten(1))
    assert torch.allclose(cos, torch.ones(12), atol=1e-5)
    assert torch.allclose(same.prompt, plain.prompt, atol=1e-5)
    assert not torch.allclose(same.mixture, plain.mixture, atol=1e-2)
    rng = np.random.default_rng(5)
    for d in (sampler._draw(0.0, rng) for _ in range(25)):
        received = resampled_length(sampler._wave_size[sampler._wave_row[d.distractor]], 1.19) + 4000 - 1
        assert d.distractor_start < received - sampler.clip


def test_pools_without_line_of_sight_flags_count_every_target_as_audible(
    sampler_parts: tuple[SoundBank, RirPool],
) -> None:
    """A pool saved before the flag existed (``line_of_sight`` None) has every direct path audible."""
    bank, pool = sampler_parts
    old = RirPool(pool.rirs, pool.azimuth, pool.sample_rate)
    assert old.line_of_sight is None
    batch = DoaExampleSampler(bank, old, "train", clip_seconds=0.1).sample(8, 0.0, np.random.default_rng(0))
    assert batch.line_of_sight.all()


def test_an_snr_range_is_drawn_per_example_across_the_range(sampler_parts: tuple[SoundBank, RirPool]) -> None:
    """``snr_db=(low, high)``: each example's measured SNR lies in the range and the batch spreads over it."""
    bank, pool = sampler_parts
    batch = DoaExampleSampler(bank, pool, "train", clip_seconds=0.1).sample(32, (-10.0, 10.0), np.random.default_rng(0))
    distractor = batch.mixture - batch.target
    snr = 10 * torch.log10(batch.target.pow(2).sum(dim=(1, 2)) / distractor.pow(2).sum(dim=(1, 2)))
    assert snr.min() >= -10.05 and snr.max() <= 10.05
    assert snr.max() - snr.min() > 10.0  # 32 uniform draws: a spread under half the range has odds ~1e-8


def test_the_target_clip_is_its_loudest_stretch_whatever_the_distractors_length(
    bank: SoundBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's loudest window is searched over the target's own received signal: with every sound's
    energy in its last quarter and the distractor replayed 1.5 times faster (received 10667 + 3999 samples,
    the target 16000 + 3999), the target clip is still the plain sampler's."""
    import asgf_nav.models.doa.data as doa_data
    from asgf_nav.models.doa.augment import identity_timbre

    fast = identity_timbre()
    fast[0] = 1.5
    timbres = iter([identity_timbre(), fast, identity_timbre()] * 8)
    pool = shoebox_pool(3, 3, seed=4, progress=False)
    plain = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25)
    plain._waves[:, : 3 * SR // 4] = 0.0
    expected = plain.sample(8, 0.0, np.random.default_rng(2)).target
    monkeypatch.setattr(doa_data, "random_timbre", lambda rng: next(timbres))
    augmented = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, augment=True)
    augmented._waves[:, : 3 * SR // 4] = 0.0
    target = augmented.sample(8, 0.0, np.random.default_rng(2)).target
    cos = torch.nn.functional.cosine_similarity(target.flatten(1), expected.flatten(1))
    assert torch.allclose(cos, torch.ones(8), atol=1e-5)


def test_a_replayed_distractors_near_silence_is_judged_against_its_own_length(
    bank: SoundBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drawn distractor window counts as near-silent against the mean energy per clip of the distractor's
    own received signal: replayed at 0.7 times the speed that is 22856 + 3999 samples, not the target's
    16000 + 3999, and the mixture's distractor part is the window this rule picks (two of these 48 draws
    come out the other way when judged against the target's length)."""
    import itertools

    import asgf_nav.models.doa.data as doa_data
    from asgf_nav.models.doa.augment import identity_timbre
    from asgf_nav.models.doa.data import loudest_window

    slow = identity_timbre()
    slow[0] = 0.7
    timbres = itertools.cycle([identity_timbre(), slow, identity_timbre()])
    monkeypatch.setattr(doa_data, "random_timbre", lambda rng: next(timbres))
    pool = shoebox_pool(3, 3, seed=4, progress=False)
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, augment=True)
    batch = sampler.sample(48, 0.0, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    draws = [sampler._draw(0.0, rng) for _ in range(48)]
    poses, sources = np.array([d.pose for d in draws]), np.array([d.distractor_source for d in draws])
    slows = torch.from_numpy(np.stack([slow] * 48))
    rx_d, len_d = sampler._received([d.distractor for d in draws], poses, sources, slows)
    assert set(len_d.tolist()) == {22856 + 3999}
    clip = sampler.clip
    loudest = loudest_window(rx_d, len_d, clip, clip // 8)
    energy = rx_d.pow(2).sum(dim=1)
    for i, d in enumerate(draws):
        drawn = float(energy[i, d.distractor_start : d.distractor_start + clip].sum())
        quiet = drawn < 0.25 * float(energy[i].sum()) * clip / int(len_d[i])
        start = int(loudest[i]) if quiet else d.distractor_start
        expected = rx_d[i, :, start : start + clip].flatten()
        heard = (batch.mixture[i] - batch.target[i]).double().flatten()
        assert float(torch.nn.functional.cosine_similarity(expected, heard, dim=0)) > 1 - 1e-5, i


def test_a_sampler_refuses_an_empty_clip_and_a_pool_without_audible_targets(
    sampler_parts: tuple[SoundBank, RirPool],
) -> None:
    """clip_seconds 0 and line-of-sight targets in a pool where every direct path is hidden are refused when built."""
    bank, pool = sampler_parts
    with pytest.raises(ValueError, match="clip_seconds 0"):
        DoaExampleSampler(bank, pool, "train", clip_seconds=0.0)
    hidden = RirPool(pool.rirs, pool.azimuth, pool.sample_rate, np.zeros(pool.azimuth.shape, dtype=bool))
    with pytest.raises(ValueError, match="no pose of the RIR pool has a line-of-sight source"):
        DoaExampleSampler(bank, hidden, "train", clip_seconds=0.1, targets="line_of_sight")
    assert DoaExampleSampler(bank, pool, "train", clip_seconds=1.0).clip == SR  # a whole one-second sound


class _CodedScene:
    """Five nodes: 0 at the origin, 1 at -X, 2 at -Z, 3 at +X, 4 at +Z (2 m each); a wall between 1 and 3."""

    name = "cross"
    positions = np.array([[0.0, 0, 0], [-2.0, 0, 0], [0, 0, -2.0], [2.0, 0, 0], [0, 0, 2.0]])
    num_nodes = 5


class _CodedRirs:
    """16 kHz responses whose impulse sample codes (receiver, source, yaw); the pair (1, 3) hears no direct path."""

    sample_rate = SR

    def __init__(self, source_nodes: list[int]) -> None:
        self.source_nodes = np.array(source_nodes)

    def rir(self, receiver: int, source: int, yaw_index: int) -> np.ndarray:
        out = np.zeros((600, 2), dtype=np.float32)
        out[20 * (5 * receiver + source) + 4 * yaw_index, 0] = 1.0
        return out

    def paths(self, receiver: int, source: int) -> EarlyPaths:
        straight = np.linalg.norm(_CodedScene.positions[receiver] - _CodedScene.positions[source])
        first = straight + (1.0 if {receiver, source} == {1, 3} else 0.0)
        return EarlyPaths(np.array([first]) / SPEED_OF_SOUND, np.zeros(1), np.zeros(1), np.ones((1, 1)))


def test_scene_pools_draw_every_yaw_flag_hidden_sources_and_need_a_source_besides_the_receiver() -> None:
    """Poses face all four yaws, each response's line-of-sight flag is its pair's, and a scene with no more
    source nodes than sources per pose is refused (a receiver on one of them would leave a response empty)."""
    pool = scene_pool(_CodedScene(), _CodedRirs([0, 1, 2, 3, 4]), num_poses=40, sources_per_pose=3, seed=1)
    codes = np.argmax(pool.rirs[..., 0], axis=-1)  # (40, 3)
    receiver, source, yaw = codes // 20 // 5, codes // 20 % 5, codes % 20 // 4
    assert set(yaw.ravel().tolist()) == {0, 1, 2, 3} and np.all(receiver != source)
    hidden = ((receiver == 1) & (source == 3)) | ((receiver == 3) & (source == 1))
    assert hidden.any() and np.array_equal(pool.line_of_sight, ~hidden)
    with pytest.raises(SceneStoreError, match="has 3 acoustic source nodes.*acoustics.sources_per_scene >= 4"):
        scene_pool(_CodedScene(), _CodedRirs([1, 2, 3]), num_poses=4, sources_per_pose=3, seed=0)


def test_a_pair_without_baked_paths_has_no_direct_path_and_the_first_reflection_follows_arrival_order() -> None:
    """No specular path: hidden. The first reflection is the second path to arrive (whatever order the paths
    are stored in), its level the band-averaged amplitude ratio in dB, and a lone direct path has none."""
    positions = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    direct, reflected = 3.0 / SPEED_OF_SOUND, 5.0 / SPEED_OF_SOUND
    paths = {
        "none": EarlyPaths(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 2))),
        "two": EarlyPaths(
            np.array([reflected, 7.0 / SPEED_OF_SOUND, direct]),  # stored out of arrival order
            np.zeros(3),
            np.zeros(3),
            np.array([[0.6, 0.15], [1.0, 1.0], [1.0, 0.5]]),  # band means 0.375, 1.0 and 0.75
        ),
        "alone": EarlyPaths(np.array([direct]), np.zeros(1), np.zeros(1), np.ones((1, 2))),
    }

    class Baked:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def paths(self, receiver: int, source: int) -> EarlyPaths:
            return paths[self.kind]

    assert not has_direct_path(Baked("none"), positions, 0, 1)
    assert first_reflection(Baked("none"), positions, 0, 1) is None
    gap, level = first_reflection(Baked("two"), positions, 0, 1)
    assert gap == pytest.approx(2.0 / SPEED_OF_SOUND) and level == pytest.approx(20 * np.log10(0.5))
    assert first_reflection(Baked("alone"), positions, 0, 1) is None


def test_a_mask_pool_renders_the_target_through_its_own_responses_and_changes_nothing_else(
    sampler_parts: tuple[SoundBank, RirPool],
) -> None:
    """With mask_pool the batch's target is the part of the received target its responses render (here the
    direct sound), on the mixture's scale and window; the mixture, prompt and labels are the same draws.
    Linearity: the pool itself as mask_pool gives back the received target."""
    bank, pool = sampler_parts
    direct = shoebox_pool(4, 3, seed=5, progress=False, direct_only=True)
    plain = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25)
    parted = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, mask_pool=direct)
    itself = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, mask_pool=pool)
    a, b, c = (s.sample(12, 0.0, np.random.default_rng(3)) for s in (plain, parted, itself))
    for name in ("mixture", "prompt", "azimuth", "distractor_azimuth", "category"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(c.target, a.target)
    energy = lambda x: x.double().pow(2).sum(dim=(1, 2))  # noqa: E731
    assert (energy(b.target) < energy(a.target)).all() and (energy(b.target) > 0).all()
    # the part is rendered through the mask pool's responses, as a sampler of that pool renders the sound
    reference = DoaExampleSampler(bank, direct, "train", clip_seconds=0.25)
    names, poses, sources = [plain.targets[0]], np.array([1]), np.array([2])
    whole, _ = plain._received(names, poses, sources)
    part, _ = parted._received(names, poses, sources, responses=parted._mask_rirs)
    torch.testing.assert_close(part, reference._received(names, poses, sources)[0])
    assert not torch.equal(part, whole)
    with pytest.raises(ValueError, match="mask_pool"):
        DoaExampleSampler(bank, pool, "train", mask_pool=shoebox_pool(2, 3, seed=5, progress=False))
