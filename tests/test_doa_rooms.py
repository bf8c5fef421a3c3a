"""Shoebox room responses for the DoA heads: image sources, spreading loss, the diffuse tail, RIR pools."""

from __future__ import annotations

import numpy as np
import pytest
from doa_helpers import SR, _source_at

from asgf_nav.models.doa.rooms import SPEED_OF_SOUND, RirPool, _image_sources, render_shoebox_rir


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
