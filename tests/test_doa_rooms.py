"""Shoebox room responses for the DoA heads: image sources, spreading loss, the diffuse tail, RIR pools."""

from __future__ import annotations

import numpy as np
import pytest
from doa_helpers import SR, _source_at

from asgf_nav.acoustics.hrtf import Hrtf, load_hrtf
from asgf_nav.models.doa.features import circular_distance
from asgf_nav.models.doa.rooms import (
    PAIR_SPACING,
    SPEED_OF_SOUND,
    RirPool,
    _image_sources,
    render_pair_rir,
    render_shoebox_rir,
    shoebox_pool,
)


def test_image_sources_are_the_wall_mirrors_up_to_the_order() -> None:
    """First-order images mirror the source in each of the six walls; order 2 adds 18 more (25 in all)."""
    source, room = np.array([1.0, 0.5, 2.0]), np.array([4.0, 3.0, 5.0])
    positions, orders = _image_sources(source, room, 1)
    expected = {
        (1.0, 0.5, 2.0): 0,
        (-1.0, 0.5, 2.0): 1,  # the wall x = 0
        (7.0, 0.5, 2.0): 1,  # the wall x = 4: 2 * 4 - 1
        (1.0, -0.5, 2.0): 1,
        (1.0, 5.5, 2.0): 1,
        (1.0, 0.5, -2.0): 1,
        (1.0, 0.5, 8.0): 1,
    }
    assert {tuple(p): int(o) for p, o in zip(positions.tolist(), orders)} == expected
    positions, orders = _image_sources(source, room, 2)
    assert np.bincount(orders).tolist() == [1, 6, 18]
    assert len({tuple(p) for p in positions.tolist()}) == 25
    # a second-order image across both x walls: mirrored in x = 0, then in x = 4 (path 2 * 4 + 1 = 9 m along x)
    assert (9.0, 0.5, 2.0) in {tuple(p) for p, o in zip(positions.tolist(), orders) if o == 2}


def test_direct_sound_falls_as_one_over_distance() -> None:
    """Without reflections the direct path's amplitude halves when the source is twice as far away."""
    rng = np.random.default_rng(0)
    room, receiver = np.array([12.0, 3.0, 12.0]), np.array([6.0, 1.5, 6.0])
    peaks = []
    for distance in (1.5, 3.0):
        source = _source_at(receiver, 40.0, 0.0, distance=distance)
        rir = render_shoebox_rir(room, receiver, source, 0.0, 0.0, 300.0, 0.3, SR, 2000, rng)
        peaks.append(np.abs(rir).max())
        onset = int(np.argmax(np.abs(rir).max(axis=1) > 0))
        assert onset == round(distance / SPEED_OF_SOUND * SR)  # the HRIR starts at the travel time
    assert peaks[0] / peaks[1] == pytest.approx(2.0, rel=1e-5)


def test_the_diffuse_tail_sits_drr_below_the_direct_sound_and_decays_60_db_over_t60() -> None:
    """Tail energy = direct energy * 10 ** (-drr / 10), and its level falls 30 dB in half of t60."""
    rng = np.random.default_rng(1)
    # a huge room: the second-order images (where the tail starts) arrive long after the direct sound ends
    room, receiver = np.array([20.0, 20.0, 20.0]), np.array([10.0, 10.0, 10.0])
    source = _source_at(receiver, 70.0, 0.0, distance=1.0)
    t60, drr = 0.2, 6.0
    rir = render_shoebox_rir(room, receiver, source, 0.0, 0.0, drr, t60, SR, 8000, rng).astype(np.float64)
    split = 600  # the direct HRIR ends near sample 47 + 181 taps; the first second-order image is 19 m away
    direct, tail = np.sum(rir[:split] ** 2), np.sum(rir[split:] ** 2)
    assert np.abs(rir[250:split]).max() == 0.0 and np.abs(rir[split:]).max() > 0
    assert 10 * np.log10(direct / tail) == pytest.approx(drr, abs=0.01)
    energy = (rir**2).sum(axis=1)
    onset = int(np.argmax(energy[split:] > 0)) + split
    window, later = 800, int(t60 / 2 * SR)  # 50 ms windows, 100 ms apart
    first = energy[onset : onset + window].sum()
    second = energy[onset + later : onset + later + window].sum()
    assert 10 * np.log10(second / first) == pytest.approx(-30.0, abs=1.5)


def test_a_pool_needs_a_target_and_a_distractor_per_pose() -> None:
    """A pool of one source per pose cannot pair a target with a distractor: refused when built."""
    rirs = np.zeros((2, 1, 10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="at least two sources per pose"):
        RirPool(rirs, np.zeros((2, 1)), SR)
    assert RirPool(np.zeros((2, 2, 10, 2), dtype=np.float32), np.zeros((2, 2)), SR).sources_per_pose == 2


def _elevation_coded_hrtf() -> Hrtf:
    """A one-tap HRTF whose gain tells the elevation it was measured at: 1 level, 2 at +60, 3 at -60 degrees."""
    azimuth, elevation = np.meshgrid([0.0, 90.0, 180.0, 270.0], [-60.0, 0.0, 60.0])
    gain = {-60.0: 3.0, 0.0: 1.0, 60.0: 2.0}
    hrir = np.array([[[gain[e]], [gain[e]]] for e in elevation.ravel()], dtype=np.float32)  # (12, 2, 1)
    return Hrtf(hrir=hrir, azimuth=azimuth.ravel(), elevation=elevation.ravel(), sample_rate=SR)


def test_each_reflection_arrives_through_the_hrir_of_its_own_elevation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor's image arrives from below and the ceiling's from above, each through the HRIR of its direction."""
    from asgf_nav.models.doa import rooms

    monkeypatch.setattr(rooms, "load_hrtf", lambda sample_rate: _elevation_coded_hrtf())
    room, receiver, source = np.array([20.0, 4.0, 20.0]), np.array([10.0, 1.5, 10.0]), np.array([12.0, 1.5, 10.0])
    rir = render_shoebox_rir(room, receiver, source, 0.0, 0.5, 300.0, 0.3, SR, 2000, np.random.default_rng(0), 1)
    floor = np.hypot(2.0, 3.0)  # the image at y = -1.5, 3 m below the ears
    ceiling = np.hypot(2.0, 5.0)  # the image at y = 2 * 4 - 1.5 = 6.5, 5 m above them
    for distance, gain in ((2.0, 1.0 / 2.0), (floor, 0.5 * 3.0 / floor), (ceiling, 0.5 * 2.0 / ceiling)):
        arrival = round(distance / SPEED_OF_SOUND * SR)
        assert rir[arrival] == pytest.approx([gain, gain], rel=1e-5), distance


def test_the_diffuse_tail_starts_with_the_second_order_images() -> None:
    """The tail begins at the earliest second-order image (not a first-order one)."""
    room, receiver = np.array([20.0, 12.0, 20.0]), np.array([10.0, 6.0, 10.0])
    source = np.array([11.0, 6.0, 10.0])
    rir = render_shoebox_rir(room, receiver, source, 0.0, 0.0, 0.0, 0.8, SR, 4000, np.random.default_rng(2))
    # nearest first-order images: floor and ceiling, 12 m; nearest second-order: the x = 20 wall and the floor
    # (x = 29, y = -6), sqrt(19^2 + 12^2) m away
    start = round(np.hypot(19.0, 12.0) / SPEED_OF_SOUND * SR)
    heard = np.flatnonzero(np.abs(rir).max(axis=1) > 0)
    direct_end = round(1.0 / SPEED_OF_SOUND * SR) + 181  # the direct path's 181-tap KEMAR HRIR at 16 kHz
    assert heard[heard > direct_end][0] == start  # silence from there until the tail


def test_the_kemar_tail_is_heard_through_the_head_and_the_pair_tail_is_not() -> None:
    """Per octave band, the KEMAR room's tail has the HRIRs' diffuse-field colour and interaural coherence
    (as the scenes' tails, ``binaural.render_late``); the free-field pair's is white and independent."""
    import pyroomacoustics as pra

    from asgf_nav.acoustics.binaural import diffuse_field, render_late
    from asgf_nav.acoustics.hrtf import load_hrtf

    bands = pra.acoustics.OctaveBandsFactory(fs=SR, base_frequency=125)
    head = diffuse_field(load_hrtf(SR), bands.n_bands)
    room, receiver = np.array([40.0, 40.0, 40.0]), np.array([20.0, 20.0, 20.0])
    source = _source_at(receiver, 30.0, 0.0, distance=1.0)
    start = 1000  # past the direct sound; the first second-order image is 40 m away (1870 samples)

    def band_stats(render) -> tuple[np.ndarray, np.ndarray]:
        power, cross = np.zeros((2, bands.n_bands)), np.zeros(bands.n_bands)
        for seed in range(8):
            rir = render(room, receiver, source, 0.0, 0.0, 0.0, 3.0, SR, 12000, np.random.default_rng(seed))
            tail = rir[start:].astype(np.float64)
            for b in range(bands.n_bands):
                left, right = bands.analysis(tail[:, 0], band=b), bands.analysis(tail[:, 1], band=b)
                power[:, b] += np.sum(left**2), np.sum(right**2)
                cross[b] += np.sum(left * right)
        return power / power.sum(axis=1, keepdims=True), cross / np.sqrt(power[0] * power[1])

    def scene_tail(room, receiver, source, yaw, reflection, drr, t60, sample_rate, length, rng) -> np.ndarray:
        """The scenes' renderer of the same decay: an energy histogram of 1 ms bins falling 60 dB over t60."""
        t = (np.arange(length // 16) + 0.5) * 1e-3
        energy = np.repeat(np.exp(-6.9 * t / t60)[None, :], bands.n_bands, axis=0)
        offsets = (int(rng.integers(0, 40000)), 0)
        return render_late(energy, 1e-3, sample_rate, length, offsets, onset=start, head=head)

    share, coherence = band_stats(render_shoebox_rir)
    scene_share, scene_coherence = band_stats(scene_tail)
    white, _ = band_stats(render_pair_rir)
    assert 10 * np.log10(share / scene_share) == pytest.approx(np.zeros_like(share), abs=0.5)
    assert np.abs(10 * np.log10(share / white)).max() > 6.0  # coloured: KEMAR's set is not equalised
    assert coherence == pytest.approx(scene_coherence, abs=0.1)  # 8 tails of 0.7 s: estimates within a few 0.01
    assert coherence[0] > 0.8  # nearly the same at both ears at low frequency, unlike independent noise
    _, independent = band_stats(render_pair_rir)
    assert np.abs(independent[1:]).max() < 0.15  # the pair's two channels: independent (the lowest band is short)


def test_the_direct_to_reverberant_ratio_counts_a_millisecond_before_the_onset_and_2_5_after() -> None:
    """DRR (dB, energy) of a hand-made response: direct window [onset - 16, onset + 40) samples at 16 kHz."""
    rir = np.zeros((1, 2, 800, 2), dtype=np.float32)
    for sample, amplitude in ((83, 0.2), (90, 0.2), (100, 1.0), (139, 0.5), (140, 0.5), (400, 0.5)):
        rir[0, :, sample, :] = amplitude  # both ears; 90 stays under 5 % of the peak's energy: 100 is the onset
    pool = RirPool(rir, np.zeros((1, 2)), SR)
    direct = 2 * (0.2**2 + 1.0 + 0.5**2)  # samples 90, 100 and 139, both ears
    rest = 2 * (0.2**2 + 0.5**2 + 0.5**2)  # samples 83, 140 and 400
    assert pool.direct_to_reverberant_db() == pytest.approx(np.full((1, 2), 10 * np.log10(direct / rest)), abs=1e-5)


def test_a_microphone_pair_hears_each_path_at_one_over_distance_and_the_tail_drr_below_both() -> None:
    """Pair receiver: each microphone's direct energy is 1 / r^2, and the tail's energy is drr below their sum."""
    room, receiver = np.array([12.0, 3.0, 12.0]), np.array([6.0, 1.5, 6.0])
    source = _source_at(receiver, 0.0, 0.0, distance=2.0)  # straight ahead: both microphones sqrt(4 + 0.09^2) away
    r2 = 2.0**2 + (PAIR_SPACING / 2) ** 2

    def render(drr_db: float) -> np.ndarray:
        args = (room, receiver, source, 0.0, 0.0, drr_db, 0.5, SR, 3000, np.random.default_rng(4))
        return render_pair_rir(*args).astype(np.float64)

    dry, wet = render(300.0), render(3.0)  # the same noise, scaled to ~nothing and to 3 dB below the direct sound
    assert np.sum(dry**2, axis=0) == pytest.approx([1 / r2, 1 / r2], rel=0.01)
    assert np.sum((wet - dry) ** 2) == pytest.approx(2 / r2 * 10 ** (-3.0 / 10), rel=1e-4)


def test_shoebox_pools_place_receivers_and_sources_in_the_room_and_label_them_from_the_geometry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each pose: one room, receiver (ears 1.5 m high, 0.5 m off the walls) and yaw; sources 0.3 m inside the
    room and at least 1 m away across the floor, labelled with their azimuth from the heading (CCW)."""
    from asgf_nav.models.doa import rooms

    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []

    def record(room, receiver, source, yaw, reflection, drr_db, t60, sample_rate, length, rng):
        calls.append((room, receiver, source.copy(), yaw))
        assert 0.55 <= reflection <= 0.9 and -2.0 <= drr_db <= 8.0 and 0.25 <= t60 <= 0.8
        return np.zeros((length, 2), dtype=np.float32)

    monkeypatch.setattr(rooms, "render_shoebox_rir", record)
    pool = shoebox_pool(40, 3, seed=0, progress=False)
    assert len(calls) == 120
    for k, (room, receiver, source, yaw) in enumerate(calls):
        first_room, first_receiver, _, first_yaw = calls[k - k % 3]
        assert np.array_equal(room, first_room) and np.array_equal(receiver, first_receiver) and yaw == first_yaw
        assert 3.0 <= room[0] <= 9.0 and 2.4 <= room[1] <= 3.2 and 3.0 <= room[2] <= 9.0
        assert receiver[1] == 1.5 and np.all((0.5 <= receiver[[0, 2]]) & (receiver[[0, 2]] <= room[[0, 2]] - 0.5))
        assert np.all((0.3 <= source[[0, 2]]) & (source[[0, 2]] <= room[[0, 2]] - 0.3)) and 0.3 <= source[1] <= 1.8
        dx, dz = source[[0, 2]] - receiver[[0, 2]]
        assert np.hypot(dx, dz) >= 1.0
        # heading at yaw y points along (-sin y, -cos y) in (x, z): the world angle of (dx, dz) minus the yaw
        expected = (np.rad2deg(np.arctan2(-dx, -dz)) - yaw) % 360.0
        assert float(circular_distance(pool.azimuth[k // 3, k % 3], expected)) < 1e-9


def test_a_direct_only_shoebox_pool_repeats_the_poses_with_each_response_its_straight_sound_alone() -> None:
    """direct_only: the same rooms, poses and labels (its renders draw nothing the later poses depend on), each
    response one HRIR at the straight path's delay, the start of the full response before any reflection."""
    full = shoebox_pool(3, 3, seed=4, progress=False)
    direct = shoebox_pool(3, 3, seed=4, progress=False, direct_only=True)
    np.testing.assert_array_equal(direct.azimuth, full.azimuth)
    taps = load_hrtf(SR).num_taps
    for rir, whole in zip(direct.rirs.reshape(-1, *direct.rirs.shape[2:]), full.rirs.reshape(-1, *full.rirs.shape[2:])):
        heard = np.flatnonzero(np.abs(rir).sum(axis=1))
        assert heard.size and heard[-1] - heard[0] < taps  # one HRIR, nothing after it
        rest = np.flatnonzero(np.abs(whole - rir).sum(axis=1) > 1e-7)
        assert rest[0] > heard[0]  # every reflection arrives after the straight sound
        np.testing.assert_allclose(whole[: rest[0]], rir[: rest[0]], atol=1e-7)
        assert (rir.astype(np.float64) ** 2).sum() < (whole.astype(np.float64) ** 2).sum()


def test_a_missing_head_is_a_one_line_error(tmp_path) -> None:
    """It ended the DoA scripts with a traceback; run_script prints a DoaCheckpointError as one line (a scene
    with too few sources for a pose is a SceneStoreError: test_doa_data)."""
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError, load_model

    with pytest.raises(DoaCheckpointError, match="missing.pt does not exist; train one with scripts/pretrain_doa.py"):
        load_model(tmp_path / "missing.pt")
