"""Selective DoA head: features, label coding, geometry, learning, classical baselines and frozen use."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from asgf_nav.acoustics.binaural import EarlyPaths
from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.models.doa.classical import (
    ArrayDoa,
    HrirWaveformMatch,
    HrtfTemplateDoa,
    gcc_phat,
    lateral_fold,
    spectral_shape,
)
from asgf_nav.models.doa.data import DoaBatch, DoaExampleSampler
from asgf_nav.models.doa.features import (
    AzimuthGrid,
    StftConfig,
    binaural_stft,
    circular_distance,
    interaural_features,
    relative_azimuth,
    tri_band_patches,
)
from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet, doa_loss, posterior_loss
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
from asgf_nav.models.doa.train import DoaTrainConfig, angular_metrics, predict, save_checkpoint, training_loss
from asgf_nav.sounds.bank import SoundBank

SR = 16000
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _source_at(receiver: np.ndarray, azimuth: float, yaw: float, distance: float = 2.0) -> np.ndarray:
    """Habitat position at ``azimuth`` (CCW from the heading) seen from ``receiver`` facing ``yaw``."""
    world = np.deg2rad(yaw + azimuth)  # heading at yaw y points to (-sin y, -cos y) in (x, z)
    return receiver + distance * np.array([-np.sin(world), 0.0, -np.cos(world)])


# ------------------------------------------------------------------------------------------- features
def test_tri_band_feature_shapes():
    cfg = StftConfig()
    audio = torch.randn(3, 2, SR // 2)
    spec = binaural_stft(audio, cfg)
    frames = cfg.frames(SR // 2)
    assert spec.shape == (3, 2, cfg.num_bins, frames)
    feats = interaural_features(spec)
    assert feats.shape == (3, 4, frames, cfg.num_bins)
    fine, mid, full = tri_band_patches(feats, (32, 128))
    assert fine.shape == (3, cfg.num_bins // 32, 4, frames, 32)
    assert mid.shape == (3, cfg.num_bins // 128, 4, frames, 128)
    assert full.shape == (3, 1, 4, frames, cfg.num_bins)
    # patches are views of the same spectrum: the second fine patch is bins 32..63
    assert torch.equal(fine[:, 1], feats[..., 32:64])
    # identical ears: zero phase and level difference
    same = interaural_features(binaural_stft(audio[:, :1].repeat(1, 2, 1), cfg))
    assert torch.allclose(same[:, 0], torch.ones_like(same[:, 0]), atol=1e-4)
    assert same[:, 1:3].abs().max() < 1e-4


def test_circular_label_encoding_and_decoding():
    assert circular_distance(359.0, 1.0) == pytest.approx(2.0)
    assert circular_distance(np.array([10.0, 180.0]), np.array([350.0, 0.0])).tolist() == [20.0, 180.0]
    grid = AzimuthGrid(bin_width=5.0, laplace_scale=5.0)
    assert grid.num_bins == 72
    azimuths = np.array([0.0, 1.0, 359.0, 92.5, 181.0, 271.3])
    target = grid.encode(azimuths)
    assert target.shape == (6, 72)
    assert torch.allclose(target.sum(1), torch.ones(6))
    # 359 and 1 degrees share their peak bin (0) and their targets are mirror images across it
    assert int(target[1].argmax()) == int(target[2].argmax()) == 0
    assert torch.allclose(target[1, 1:6], torch.flip(target[2, 67:72], [0]))
    decoded = grid.decode(target)
    assert circular_distance(decoded, azimuths).max() < 1.5
    with pytest.raises(ValueError):
        AzimuthGrid(bin_width=7.0)


def test_relative_azimuth_follows_habitat_yaw():
    origin = np.zeros(3)
    assert relative_azimuth(origin, np.array([0, 0, -1.0]), 0.0) == pytest.approx(0.0)  # ahead
    assert relative_azimuth(origin, np.array([-1.0, 0, 0]), 0.0) == pytest.approx(90.0)  # left
    assert relative_azimuth(origin, np.array([0, 0, 1.0]), 90.0) == pytest.approx(90.0)  # yaw 90 faces -X
    assert relative_azimuth(origin, np.array([1.0, 0, 0]), 0.0) == pytest.approx(270.0)  # right
    for az, yaw in [(30.0, 0.0), (200.0, 90.0), (315.0, 270.0)]:
        assert relative_azimuth(origin, _source_at(origin, az, yaw), yaw) == pytest.approx(az)


def test_shoebox_rir_puts_a_left_source_in_the_left_ear():
    rng = np.random.default_rng(0)
    room, receiver = np.array([6.0, 3.0, 6.0]), np.array([3.0, 1.5, 3.0])
    for yaw in (0.0, 90.0, 230.0):
        left = render_shoebox_rir(
            room, receiver, _source_at(receiver, 90.0, yaw), yaw, 0.7, 6.0, 0.4, SR, 4000, rng
        )
        right = render_shoebox_rir(
            room, receiver, _source_at(receiver, 270.0, yaw), yaw, 0.7, 6.0, 0.4, SR, 4000, rng
        )
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
    rirs = [render_pair_rir(room, receiver, source, 0.0, reflection, drr, 0.5, SR, 4000, rng)
            for reflection, drr in ((0.0, 300.0), (0.6, 6.0), (0.9, -3.0))]
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
    rirs = np.stack([np.stack([
        render_shoebox_rir(room, receiver, _source_at(receiver, az, 0.0, distance=2.5), 0.0, 0.8, 0.0, 0.4,
                           SR, 2000, rng) for az in row]) for row in azimuths])  # direct path + equal-energy tail
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
    from asgf_nav.models.doa.train import rir_pool

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
    # line of sight: exactly the pairs whose first arrival travels the straight distance
    assert pool.line_of_sight.dtype == bool and pool.line_of_sight.shape == (6, 3)
    positions, rirs = FakeScene.positions, FakeRirs()
    assert has_direct_path(rirs, positions, 0, 1) and not has_direct_path(rirs, positions, 1, 3)
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
        60, 0.0, np.random.default_rng(1))
    assert batch.line_of_sight.all()
    visible = {float(a) for a in pool.azimuth[pool.line_of_sight].astype(np.float32)}
    assert {float(a) for a in batch.azimuth} == visible  # every audible source is drawn, nothing else
    assert (batch.distractor_azimuth != batch.azimuth).all()
    # the default keeps its draws (the benchmark's clips) and includes sources behind walls
    every = DoaExampleSampler(bank, pool, "train", clip_seconds=0.1).sample(60, 0.0, np.random.default_rng(1))
    assert not every.line_of_sight.all()
    with pytest.raises(ValueError, match="targets"):
        DoaExampleSampler(bank, pool, "train", targets="visible")


# ------------------------------------------------------------------------------------------- data
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
    assert set(np.round(batch.azimuth.numpy(), 4)) <= set(
        np.round(pool.azimuth.ravel().astype(np.float32), 4)
    )


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
    return {"mixture": mix * scale, "target": seg_t * scale, "prompt": prompt / np.sqrt(np.mean(prompt**2)),
            "quiet": quiet}


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


# ------------------------------------------------------------------------------------------- learning
def _tiny_config() -> DoaNetConfig:
    return DoaNetConfig(
        band_widths=(32, 64),
        patch_dim=32,
        model_dim=32,
        stft=StftConfig(sample_rate=SR, n_fft=256, hop=256, num_bins=128),
    )


def test_loss_parts_and_output_shapes(bank):
    net = SelectiveDoaNet(_tiny_config())
    sampler = DoaExampleSampler(bank, shoebox_pool(3, 3, seed=1, progress=False), "train", clip_seconds=0.25)
    batch = sampler.sample(4, 0.0, np.random.default_rng(1))
    out = net(batch.mixture, batch.prompt)
    assert out["posterior"].shape == (4, 72)
    assert torch.allclose(out["posterior"].sum(1), torch.ones(4), atol=1e-5)
    assert out["mask"].min() >= 0 and out["mask"].max() <= 1
    assert torch.allclose(out["band_weights"].sum(-1), torch.ones_like(out["band_weights"][..., 0]))
    assert [b.shape[1] for b in out["patch_weights"]] == [4, 2, 1]
    loss, parts = training_loss(net, batch, doa_weight=1.0)
    assert loss.item() == pytest.approx(parts["recon"] + parts["posterior_mse"], rel=1e-4)
    target = net.cfg.grid.encode(batch.azimuth)
    perfect = {"masked": out["masked"], "posterior": target, "log_posterior": target.log()}
    assert doa_loss(perfect, out["masked"], target)[0].item() == pytest.approx(0.0)
    # cross-entropy against the soft target: its minimum is the target's entropy, reached at the target
    entropy = -(target * target.log()).sum(1).mean().item()
    assert doa_loss(perfect, out["masked"], target, posterior_kind="cross_entropy")[0].item() == pytest.approx(
        entropy, rel=1e-5)
    ce, parts = posterior_loss(out, target, "cross_entropy")
    assert ce.item() > entropy and set(parts) == {"posterior_cross_entropy"}
    with pytest.raises(ValueError, match="posterior loss"):
        posterior_loss(out, target, "hinge")


def test_mask_head_kinds_and_old_checkpoint_configs(bank):
    cfg = _tiny_config()
    old = cfg.to_dict()
    del old["mask_head"]  # configs stored before the template mask head existed
    assert DoaNetConfig.from_dict(old).mask_head == "mlp"
    assert SelectiveDoaNet(DoaNetConfig.from_dict(old)).mask_head is None
    with pytest.raises(ValueError, match="mask head 'unet'"):
        SelectiveDoaNet(DoaNetConfig(**{**cfg.to_dict(), "mask_head": "unet", "stft": cfg.stft}))
    # the template head reads the prompt per bin: two prompts give two different masks of one mixture
    torch.manual_seed(0)
    net = SelectiveDoaNet(cfg).eval()
    sampler = DoaExampleSampler(bank, shoebox_pool(2, 3, seed=1, progress=False), "train", clip_seconds=0.25)
    batch = sampler.sample(2, 0.0, np.random.default_rng(3))
    mixture = batch.mixture[:1].expand(2, -1, -1)
    with torch.no_grad():
        mask = net(mixture, batch.prompt)["mask"]
    assert not torch.allclose(mask[0], mask[1], atol=1e-4)


@pytest.mark.parametrize("posterior_kind, doa_weight", [("mse", 10.0), ("cross_entropy", 1.0)])
def test_head_learns_on_a_tiny_generated_set(bank, posterior_kind, doa_weight):
    torch.manual_seed(0)
    pool = shoebox_pool(6, 4, seed=3, progress=False)
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25)
    data = sampler.sample(48, 30.0, np.random.default_rng(2))
    net = SelectiveDoaNet(_tiny_config())
    before = angular_metrics(predict(net, data), data.azimuth.numpy())["mae"]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    start = time.monotonic()
    for step in range(150):
        part = data.slice((step % 3) * 16, (step % 3) * 16 + 16)
        loss, _ = training_loss(net, part, doa_weight, posterior_kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 and angular_metrics(predict(net, data), data.azimuth.numpy())["mae"] < 30:
            break
        if time.monotonic() - start > 50:
            break
    after = angular_metrics(predict(net, data), data.azimuth.numpy())["mae"]
    assert before > 60  # an untrained head is near chance (90 degrees)
    assert after < 40, f"MAE {before:.1f} -> {after:.1f} degrees"


# ------------------------------------------------------------------------------------------- classical
def test_two_microphone_methods_find_the_lateral_angle():
    rng = np.random.default_rng(4)
    room, receiver = np.array([7.0, 3.0, 7.0]), np.array([3.5, 1.5, 3.5])
    noise = rng.standard_normal(SR // 2)
    srp = ArrayDoa("SRP", SR)
    for az in (0.0, 25.0, 155.0, 335.0):  # beyond ~50 degrees the head's wider ITD saturates the pair model
        rir = render_shoebox_rir(
            room, receiver, _source_at(receiver, az, 0.0), 0.0, 0.5, 10.0, 0.3, SR, 4000, rng
        )
        audio = np.stack([np.convolve(noise, rir[:, c])[: SR // 2] for c in range(2)])
        truth = lateral_fold(az)
        # a real head delays the far ear more than a 0.18 m free-field pair, which overstates lateral angles
        assert circular_distance(gcc_phat(audio, SR), truth) < 25
        assert circular_distance(srp(audio), truth) < 25
    assert lateral_fold(np.array([150.0, 210.0, 30.0])).tolist() == pytest.approx([30.0, 330.0, 30.0])


def test_hrtf_template_matching_localises_over_the_full_circle():
    rng = np.random.default_rng(2)
    room, receiver = np.array([8.0, 3.0, 8.0]), np.array([4.0, 1.5, 4.0])
    noise = rng.standard_normal(SR // 2)
    template = HrtfTemplateDoa(SR)
    for az in (0.0, 40.0, 135.0, 200.0, 290.0):  # front and back: the head's templates tell them apart
        rir = render_shoebox_rir(
            room, receiver, _source_at(receiver, az, 0.0), 0.0, 0.0, 300.0, 0.3, SR, 2000, rng
        )  # anechoic: the direct path only
        audio = np.stack([np.convolve(noise, rir[:, c])[: SR // 2] for c in range(2)])
        assert circular_distance(template(audio), az) <= 5, az


def _kemar_hrir(az: float) -> np.ndarray:
    """(2, taps) KEMAR HRIR pair nearest to ``az`` on the horizontal plane."""
    hrtf = load_hrtf(SR)
    return hrtf.hrir[hrtf.nearest(np.array([az]), np.array([0.0]))[0]].astype(np.float64)


def test_onset_weighted_templates_follow_the_first_arrival_not_a_louder_reflection():
    taps = load_hrtf(SR).num_taps
    rng = np.random.default_rng(0)
    n = SR // 2
    source = np.zeros(n)
    for start in range(400, n - 2000, 1600):  # 40 ms noise bursts every 100 ms: one onset each
        source[start : start + 640] = rng.standard_normal(640)
    time_averaged, precedence = HrtfTemplateDoa(SR), HrtfTemplateDoa.precedence(SR)
    for direct, reflected in [(30.0, 100.0), (200.0, 300.0), (120.0, 20.0), (330.0, 250.0)]:
        ears = np.zeros((2, 2 * n))
        for c in range(2):  # the direct sound, then 4 ms later a reflection 6 dB louder from elsewhere
            ears[c, : n + taps - 1] += np.convolve(source, _kemar_hrir(direct)[c])
            ears[c, 64 : 64 + n + taps - 1] += 2.0 * np.convolve(source, _kemar_hrir(reflected)[c])
        ears = ears[:, :n]
        assert circular_distance(precedence(ears), direct) <= 5
        assert circular_distance(time_averaged(ears), reflected) <= 5  # the average follows the energy
    with pytest.raises(ValueError, match="onset_power"):
        HrtfTemplateDoa(SR, onset_power=-1.0)


def test_hrir_waveform_match_reads_one_wavefront_and_is_fooled_by_a_close_second_one():
    match = HrirWaveformMatch(SR)
    taps = load_hrtf(SR).num_taps
    for az in (30.0, 150.0, 210.0, 330.0, 90.0, 275.0):  # front/back mirror pairs included
        window = np.zeros((2, taps + 24))
        window[:, 7 : 7 + taps] = 0.3 * _kemar_hrir(az)  # any delay and gain
        assert match(window) == az
    # a second, equally strong wavefront from 40 degrees away arriving 0.25 ms later pulls the reading off
    window = np.zeros((2, taps + 24))
    window[:, 7 : 7 + taps] += _kemar_hrir(30.0)
    window[:, 11 : 11 + taps] += _kemar_hrir(70.0)
    assert match(window) != 30.0


def _band_noise(rng: np.random.Generator, low: float, high: float, n: int = SR // 2) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SR)
    return np.fft.irfft(spec * ((freqs >= low) & (freqs < high)), n)


def test_spectral_shape_ignores_gain_and_tells_spectra_apart():
    rng = np.random.default_rng(5)
    low, other_low, high = _band_noise(rng, 200, 800), _band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000)
    shape = spectral_shape(low, SR)
    assert np.linalg.norm(shape) == pytest.approx(1.0)
    assert spectral_shape(7.0 * low, SR) == pytest.approx(shape, abs=1e-6)
    assert spectral_shape(np.stack([low, low]), SR) == pytest.approx(shape, abs=1e-6)  # channels summed
    assert spectral_shape(other_low, SR) @ shape > 0.9 > spectral_shape(high, SR) @ shape + 0.5


def test_prompt_choice_reference_counts_the_source_the_prompt_resembles():
    from asgf_nav.eval.doa_eval import prompt_choice_reference

    rng = np.random.default_rng(6)
    low = [_band_noise(rng, 200, 800) for _ in range(3)]
    high = [_band_noise(rng, 2000, 6000) for _ in range(3)]
    # clip 0: low target, low prompt; clip 1: high target, high prompt; clip 2: low target, high prompt
    targets = [low[0], high[0], low[1]]
    distractors = [high[1], low[2], high[2]]
    prompts = [_band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000), _band_noise(rng, 2000, 6000)]
    target = torch.tensor(np.stack([np.stack([t, 0.5 * t]) for t in targets]), dtype=torch.float32)
    distractor = torch.tensor(np.stack([np.stack([d, d]) for d in distractors]), dtype=torch.float32)
    batch = DoaBatch(
        mixture=target + distractor, target=target, prompt=torch.tensor(np.stack(prompts), dtype=torch.float32),
        category=torch.zeros(3, dtype=torch.long), azimuth=torch.zeros(3), distractor_azimuth=torch.zeros(3),
        line_of_sight=torch.ones(3, dtype=torch.bool),
    )
    assert prompt_choice_reference(batch, SR) == pytest.approx(200 / 3)
    assert prompt_choice_reference(batch.slice(0, 2), SR) == 100.0
    assert prompt_choice_reference(batch.slice(2, 3), SR) == 0.0


# ------------------------------------------------------------------------------------------- frozen use
def test_frozen_head_is_unchanged_by_a_policy_update(bank, tmp_path):
    from gymnasium import spaces

    from asgf_nav.config import ExperimentConfig
    from asgf_nav.models.doa.observation import DoaObservation
    from asgf_nav.models.policies import build_policy

    net = SelectiveDoaNet(_tiny_config())
    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", net, None, 0, DoaTrainConfig(), {})
    head = DoaObservation(ckpt, window_seconds=0.25)
    assert not head.model.training
    assert all(not p.requires_grad for p in head.model.parameters())
    frozen = {k: v.clone() for k, v in head.model.state_dict().items()}

    cfg = ExperimentConfig()
    cfg.model.policy, cfg.model.hidden_size, cfg.task.use_doa = "av_nav", 32, True
    space = spaces.Dict(
        {
            "spectrogram": spaces.Box(0, np.inf, (65, 69, 2), np.float32),
            "doa": spaces.Box(0, 1, (head.num_bins,), np.float32),
        }
    )
    policy = build_policy(cfg, space)
    assert policy.use_doa
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    sounds = bank.names("test")[:2]
    audio = np.random.default_rng(0).standard_normal((2, 2, SR)).astype(np.float32)
    doa = head.compute(audio, sounds)
    assert doa.shape == (2, head.num_bins) and not doa.requires_grad
    assert torch.allclose(doa.sum(1), torch.ones(2), atol=1e-5)
    obs = {"spectrogram": torch.rand(2, 65, 69, 2), "doa": doa}
    value, log_prob, entropy, _ = policy.evaluate_actions(
        obs, policy.initial_hidden(2), torch.ones(2), torch.tensor([0, 1])
    )
    loss = -(log_prob.mean() + 0.1 * entropy.mean()) + value.pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in head.model.parameters())
    assert not head.model.training
    for key, value in head.model.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_registered_doa_observation_on_a_synthetic_world(tmp_path):
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.episodes import ResolvedEpisode
    from asgf_nav.tasks.observations import ObservationState, get_observation
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(), {})
    head = register_doa_observation(ckpt, name="doa_test")
    provider = get_observation("doa_test")
    world = synthetic_world(sample_rate=SR)
    scene = world.scene("grid_a")
    episode = ResolvedEpisode("0", "grid_a", 0, 0, int(scene.num_nodes - 1), "telephone", 3.0, 5)
    state = ObservationState(world, scene, episode, node=0, yaw=1, step=0)
    obs = provider.compute(state)
    assert obs.shape == provider.space(world).shape == (head.num_bins,)
    assert obs.dtype == np.float32 and abs(float(obs.sum()) - 1.0) < 1e-4
    assert (head.cache.hits, head.cache.misses) == (0, 1)

    # the same state again is served from the cache; another yaw is computed and differs
    assert np.array_equal(provider.compute(state), obs)
    turned = provider.compute(ObservationState(world, scene, episode, node=0, yaw=2, step=1))
    assert (head.cache.hits, head.cache.misses) == (1, 2)
    assert not np.allclose(turned, obs)

    # the batched path shares the cache: known states are hits, a repeated new state is computed once
    from asgf_nav.tasks.observations import BatchObservationState

    nodes, yaws = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 0, 0])
    batch = BatchObservationState(world, [episode] * 4, nodes, yaws, torch.zeros(4, dtype=torch.long),
                                  torch.zeros(4, 3), torch.zeros(4, 3))
    rows = provider.compute_batch(batch)
    assert rows.shape == (4, head.num_bins) and rows.dtype == torch.float32
    assert (head.cache.hits, head.cache.misses) == (4, 3)
    assert np.array_equal(rows[0].numpy(), obs) and np.array_equal(rows[1].numpy(), turned)
    assert torch.equal(rows[2], rows[3])
    moved = provider.compute(ObservationState(world, scene, episode, node=1, yaw=0, step=2))
    assert np.allclose(rows[2].numpy(), moved) and (head.cache.hits, head.cache.misses) == (5, 3)
    uncached = register_doa_observation(ckpt, name="doa_test", cache_size=0)
    assert np.allclose(get_observation("doa_test").compute(state), obs, atol=1e-6)
    assert len(uncached.cache.rows) == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_batched_doa_observation_matches_a_per_item_numpy_reference(bank, tmp_path, device):
    """The provider convolves its batch of misses in one torch call on the env's device, where the head runs
    too; the reference renders one item at a time in numpy and runs the head window by window on the CPU."""
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.episodes import ResolvedEpisode
    from asgf_nav.tasks.observations import BatchObservationState, get_observation
    from asgf_nav.tasks.spectrogram import binaural_audio_np
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(), {})
    head = register_doa_observation(ckpt, name="doa_ref", cache_size=0)
    world = synthetic_world(sample_rate=SR)
    scene = world.scene("grid_a")
    episodes = [ResolvedEpisode(str(i), "grid_a", 0, 0, int(scene.num_nodes - 1 - i), sound, 3.0, 5)
                for i, sound in enumerate(["telephone", "telephone", bank.names("test")[0]])]  # fmt: skip
    nodes, yaws = torch.tensor([0, 3, 5], device=device), torch.tensor([1, 2, 3], device=device)
    batch = BatchObservationState(world, episodes, nodes, yaws, torch.zeros(3, dtype=torch.long, device=device),
                                  torch.zeros(3, 3, device=device), torch.zeros(3, 3, device=device))  # fmt: skip
    rows = get_observation("doa_ref").compute_batch(batch)
    assert rows.device.type == head.device.type == device
    rows, reference_head = rows.cpu(), head.to("cpu").model
    assert head.window * 2 == SR  # two windows per second
    for i, episode in enumerate(episodes):
        rir = scene.rir(int(nodes[i]), episode.goal_node, int(yaws[i]))
        audio = binaural_audio_np(world.sound(episode.sound), rir, SR).T.astype(np.float64)
        posts = []
        for start in range(0, SR - head.window + 1, head.window):
            piece = audio[:, start : start + head.window]
            piece = torch.from_numpy(piece / (np.sqrt(np.mean(piece**2)) + 1e-9)).float()
            with torch.no_grad():
                posts.append(reference_head(piece[None], head.prompt_for(episode.sound)[None])["posterior"][0])
        # on a GPU, cuDNN's convolutions may round through TF32
        assert torch.allclose(rows[i], torch.stack(posts).mean(0), atol=1e-5 if device == "cpu" else 5e-4), i


def test_batched_env_hands_the_audio_of_its_spectrograms_to_the_doa_head(bank, tmp_path, monkeypatch):
    """A state the spectrogram cache misses is one the DoA cache misses too (the same key); its audio is
    rendered once for both, and the posteriors equal those of a head that renders the audio itself."""
    from asgf_nav.config import TaskConfig
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episodes import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(), {})
    world = synthetic_world(sample_rate=SR)
    sounds = ["telephone", bank.names("test")[0]]
    episodes = generate_split(world, "train", "unheard", sounds, TaskConfig(train_episodes_per_scene=6))
    cfg = TaskConfig(max_steps=12, sensors=["spectrogram", "doa_shared"])
    renders = []

    def counted(rir):
        def rir_and_count(*args):
            renders.append(args)
            return rir(*args)

        return rir_and_count

    for scene in world.scenes.values():
        monkeypatch.setattr(scene, "rir", counted(scene.rir))
    actions = torch.from_numpy(np.random.default_rng(3).choice(4, size=(16, 3), p=[0.05, 0.55, 0.2, 0.2]))
    runs = {}
    for reuse in (True, False):
        head = register_doa_observation(ckpt, name="doa_shared", cache_size=4096)
        env = BatchedAudioNavEnv(world, episodes, 3, cfg=cfg, seed=4, cache_size=4096)
        env.reuse_audio = reuse
        renders.clear()
        seen = [env.reset()["doa_shared"]] + [env.step(a)[0]["doa_shared"] for a in actions]
        assert head.cache.misses == env.cache.misses > 3
        runs[reuse] = torch.stack(seen), len(renders), env.cache.misses
    (shared, shared_renders, misses), (own, own_renders, _) = runs[True], runs[False]
    assert shared_renders == misses and own_renders == 2 * misses
    assert torch.allclose(shared, own, atol=1e-5)


def test_posterior_cache_computes_each_missing_key_once_and_evicts_the_oldest():
    from asgf_nav.models.doa.observation import PosteriorCache

    calls = []

    def fill(keys):
        def rows(indices):
            calls.append([keys[i] for i in indices])
            return np.array([[keys[i], 0.0] for i in indices])

        return rows

    cache = PosteriorCache(capacity=2)
    keys = [1, 2, 1]
    assert cache.get(keys, fill(keys))[:, 0].tolist() == [1, 2, 1]
    assert calls == [[1, 2]] and (cache.hits, cache.misses) == (1, 2)
    keys = [3, 1]
    cache.get(keys, fill(keys))  # 1 is used again, so 3 evicts 2, the least recently used
    assert calls[-1] == [3] and list(cache.rows) == [1, 3]
    keys = [2]
    cache.get(keys, fill(keys))
    assert calls[-1] == [2] and list(cache.rows) == [3, 2]
    with pytest.raises(ValueError, match="cache size"):
        PosteriorCache(-1)


def test_learning_rate_and_snr_curriculum_follow_the_step():
    from asgf_nav.models.doa.train import learning_rate, snr_lift

    cfg = DoaTrainConfig(lr=1e-3, lr_final_fraction=0.1, max_steps=100, curriculum_db=30.0, curriculum_steps=40)
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50) == pytest.approx(0.55e-3)
    assert learning_rate(cfg, 100) == pytest.approx(1e-4)
    assert learning_rate(cfg, 500) == pytest.approx(1e-4)
    assert snr_lift(cfg, 0) == 30.0 and snr_lift(cfg, 20) == 15.0 and snr_lift(cfg, 40) == 0.0
    assert snr_lift(DoaTrainConfig(curriculum_steps=0), 0) == 0.0


def test_rir_pool_rejects_unknown_rooms_and_scenes_without_a_root(tmp_path):
    from asgf_nav.models.doa.train import rir_pool, train

    with pytest.raises(ValueError, match="rooms must be one of"):
        rir_pool(DoaTrainConfig(rooms="castle", pool_dir=str(tmp_path)), "train", 2, 0)
    with pytest.raises(ValueError, match="needs scenes_root"):
        rir_pool(DoaTrainConfig(rooms="both", pool_dir=str(tmp_path)), "train", 2, 0)
    with pytest.raises(ValueError, match="posterior_loss must be one of"):
        train(DoaTrainConfig(posterior_loss="hinge", pool_dir=str(tmp_path)))


def test_benchmark_runs_end_to_end_on_tiny_pools(tmp_path, caplog):
    import json
    import logging

    from asgf_nav.eval.doa_eval import EvalConfig, evaluate, markdown_table

    ckpt = tmp_path / "selective.pt"
    save_checkpoint(ckpt, "selective", SelectiveDoaNet(_tiny_config()), None, 0,
                    DoaTrainConfig(rooms="shoebox_pair"), {})
    cfg = EvalConfig(selective=str(ckpt), crnn=str(tmp_path / "missing.pt"), pool_dir=str(tmp_path),
                     test_poses=3, examples=6, snrs=(0.0,), gmm_train_examples=40, train_poses=3,
                     out=str(tmp_path / "eval.json"), threads=1, distractor_window="loudest", clip_seconds=0.25)
    with caplog.at_level(logging.WARNING):
        results = evaluate(cfg)
    assert "trained on rooms=shoebox_pair but is tested on rooms=shoebox" in caplog.text
    assert "CRNN (audio only) is left out" in caplog.text
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["distractor_window"] == "loudest" and saved["rooms"] == "shoebox" and saved["clip_seconds"] == 0.25
    assert saved["test_rooms_drr_db"]["q10"] <= saved["test_rooms_drr_db"]["median"]
    assert saved["direct_sound_reference"]["responses"] == 3 * 6  # every shoebox source is in sight
    methods = results["methods"]
    assert "HRTF template matching (KEMAR)" in methods and "selective (audio prompt)" in methods
    assert "HRTF templates, onset-weighted (precedence)" in methods
    for per_condition in methods.values():
        assert set(per_condition) == {"unheard +0 dB", "heard +0 dB"}
        for m in per_condition.values():
            assert m["acc5"] <= m["acc20"] and m["acc5"] <= m["either5"] <= 100
            assert m["hit_distractor5"] <= m["hit_distractor20"]
    assert set(saved["prompt_choice_reference"]) == {"unheard +0 dB", "heard +0 dB"}
    assert all(0 <= v <= 100 for v in saved["prompt_choice_reference"].values())
    table = markdown_table(results)
    assert "[" in table and "HRTF templates on the direct sound alone (18 line-of-sight" in table
    assert "Whole HRIR waveforms matched to their first 2 ms: " in table
    assert "Prompt's spectral shape closer to the separated target's" in table


def test_benchmark_table_has_a_line_of_sight_section():
    from asgf_nav.eval.doa_eval import markdown_table

    m = {"mae": 10.0, "acc5": 50.0, "acc20": 80.0, "mae_lateral": 5.0, "line_of_sight_share": 75.0,
         "line_of_sight": {"mae": 8.0, "acc5": 60.0, "acc20": 90.0}}
    table = markdown_table({"methods": {"a": {"unheard +0 dB": m}, "b": {"unheard +0 dB": m}}})
    assert "| a | 10.0 / 50.0 / 80.0 (5.0) |" in table
    assert "(unheard +0 dB: 75 % of the clips)" in table and "| b | 8.0 / 60.0 / 90.0 |" in table
    without = {k: v for k, v in m.items() if not k.startswith("line_of_sight")}
    assert "Line-of-sight" not in markdown_table({"methods": {"a": {"unheard +0 dB": without}}})
    all_in_sight = {**m, "line_of_sight_share": 100.0}
    assert "Line-of-sight" not in markdown_table({"methods": {"a": {"unheard +0 dB": all_in_sight}}})
    selection = {**without, "hit_distractor5": 30.0, "either5": 85.0}
    assert "| a | 10.0 / 50.0 / 80.0 (5.0) [30.0 / 85.0] |" in markdown_table({"methods": {"a": {"c": selection}}})


def test_doa_scripts_name_bad_arguments(tmp_path, capsys):
    import eval_doa
    import pretrain_doa

    cases = [
        (eval_doa.main, ["--selective", str(tmp_path / "nope.pt")], f"--selective: checkpoint {tmp_path / 'nope.pt'}"),
        (eval_doa.main, ["--rooms", "kitchen"], "invalid choice: 'kitchen'"),
        (eval_doa.main, ["--clip-seconds", "2"], "--clip-seconds: 2.0 s is outside (0, 1]"),
        (pretrain_doa.main, ["--model", "transformer"], "invalid choice: 'transformer'"),
        (pretrain_doa.main, ["--targets", "visible"], "invalid choice: 'visible'"),
    ]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_bad_doa_checkpoint_is_a_config_error_naming_the_key(tmp_path):
    from asgf_nav.config import ConfigError, ExperimentConfig
    from asgf_nav.experiment import register_auxiliary_observations

    corrupt, foreign = tmp_path / "corrupt.pt", tmp_path / "foreign.pt"
    corrupt.write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, message in (
        (tmp_path / "missing.pt", "does not exist"),
        (corrupt, "not readable as a torch checkpoint"),
        (foreign, "not a valid DoA model"),
    ):
        cfg = ExperimentConfig()
        cfg.task.use_doa, cfg.task.doa_checkpoint = True, str(path)
        with pytest.raises(ConfigError) as error:
            register_auxiliary_observations(cfg)
        assert str(error.value).startswith("task.doa_checkpoint: ") and str(path) in str(error.value)
        assert message in str(error.value) and "doa" not in cfg.task.sensors


def test_frozen_head_is_unchanged_by_ppo_training(tmp_path, monkeypatch):
    """Real PPO updates of an ASGF policy that reads the doa observation leave the head's weights alone."""
    from asgf_nav.config import ExperimentConfig, TaskConfig
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.rl.trainer import Trainer
    from asgf_nav.tasks import observations
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episodes import generate_split, resolve_episodes
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))  # the test's "doa" stays here
    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(), {})
    head = register_doa_observation(ckpt)
    frozen = {k: v.clone() for k, v in head.model.state_dict().items()}
    scenes = [grid_scene("grid_doa", nx=5, nz=4, image_size=48, sample_rate=SR)]
    world = synthetic_world(scenes, sample_rate=SR)
    split = generate_split(world, "train", "heard", ["telephone"], TaskConfig(train_episodes_per_scene=20))
    episodes = resolve_episodes(split, world)
    cfg = ExperimentConfig()
    cfg.model.policy, cfg.model.hidden_size, cfg.model.ase_dim = "asgf", 32, 32
    cfg.model.fusion_dim, cfg.model.fusion_heads = 16, 2
    cfg.task.use_doa, cfg.task.sensors, cfg.task.max_steps = True, ["depth", "spectrogram", "doa"], 10
    cfg.ppo.num_envs, cfg.ppo.num_steps, cfg.ppo.ppo_epoch, cfg.ppo.num_mini_batch = 4, 8, 2, 2
    cfg.ppo.total_frames = 2 * 4 * 8
    cfg.train.device, cfg.train.val_interval, cfg.train.checkpoint_interval = "cpu", 0, 100

    def env_factory(cfg: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        return BatchedAudioNavEnv(world, episodes, cfg.ppo.num_envs, sensors=cfg.task.sensors, seed=rank, cfg=cfg.task)

    trainer = Trainer(cfg, env_factory, tmp_path / "run")
    assert trainer.policy.use_doa
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train()
    assert head.cache.misses > 0  # the rollouts rendered doa observations
    changed = [k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "PPO did not update the policy"
    assert not head.model.training and all(not p.requires_grad for p in head.model.parameters())
    for key, value in head.model.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_stopped_pretraining_saves_its_last_step_and_resumes_there(tmp_path):
    """SIGTERM during DoA pretraining: the step ends, is saved, and the same command continues from it."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from stopping import stop_when

    script = Path(__file__).resolve().parent.parent / "scripts" / "pretrain_doa.py"
    out = tmp_path / "crnn.pt"
    command = [
        sys.executable, str(script), "--model", "crnn", "--out", str(out), "--pool-dir", str(tmp_path / "pools"),
        "--train-poses", "4", "--val-poses", "2", "--sources-per-pose", "2", "--batch-size", "4",
        "--clip-seconds", "0.25", "--val-examples", "8", "--val-every", "1", "--checkpoint-every", "1000",
        "--threads", "1", "--max-minutes", "5",
    ]  # fmt: skip
    returncode, log = stop_when([*command, "--max-steps", "100000"], " step 2 loss ", signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, log[-3000:]
    step = int(torch.load(out, weights_only=False)["step"])  # no periodic checkpoint was due: the stop's own
    assert step >= 2 and f"stopped at step {step};" in log, log[-3000:]

    resumed = subprocess.run([*command, "--max-steps", str(step + 1)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed crnn from {out} at step {step}" in resumed.stderr
    assert int(torch.load(out, weights_only=False)["step"]) == step + 1
