"""The shipped MIT KEMAR HRTF: layout, conventions (channel 0 = left, azimuth counter-clockwise)."""

from __future__ import annotations

import numpy as np
import pytest

from asgf_nav.acoustics.hrtf import KEMAR_FILE, load_hrtf


def _onset(x: np.ndarray) -> int:
    return int(np.argmax(np.abs(x) > 0.2 * np.abs(x).max()))


def test_file_is_compact_and_complete():
    assert KEMAR_FILE.stat().st_size < 2_000_000
    assert (KEMAR_FILE.parent / "MIT_KEMAR_ATTRIBUTION.md").exists()
    h = load_hrtf(44100)
    assert h.hrir.shape[0] == 710 and h.hrir.shape[1] == 2
    assert h.azimuth.min() >= 0 and h.azimuth.max() < 360
    assert h.elevation.min() == pytest.approx(-40) and h.elevation.max() == pytest.approx(90)


@pytest.mark.parametrize("rate", [44100, 16000])
def test_source_on_the_left_is_louder_and_earlier_in_the_left_ear(rate: int):
    h = load_hrtf(rate)
    left = int(h.nearest(np.array([90.0]), np.array([0.0]))[0])
    right = int(h.nearest(np.array([270.0]), np.array([0.0]))[0])
    ir = h.hrir[left]
    ild = 10 * np.log10((ir[0] ** 2).sum() / (ir[1] ** 2).sum())
    assert ild > 6.0
    assert _onset(ir[0]) < _onset(ir[1])
    np.testing.assert_allclose(h.hrir[right][::-1], ir, atol=0.05 * np.abs(ir).max())  # KEMAR set is symmetric


def test_nearest_returns_the_exact_grid_direction():
    h = load_hrtf(44100)
    idx = h.nearest(h.azimuth[::37], h.elevation[::37])
    np.testing.assert_array_equal(idx, np.arange(len(h.azimuth))[::37])


def test_front_and_back_hrirs_differ_in_spectrum():
    h = load_hrtf(44100)
    front, back = h.nearest(np.array([0.0, 180.0]), np.array([0.0, 0.0]))
    spec = np.abs(np.fft.rfft(h.hrir[[front, back]], n=1024, axis=-1)) + 1e-9
    freqs = np.fft.rfftfreq(1024, 1 / 44100)
    band = (freqs > 2000) & (freqs < 12000)
    diff_db = np.abs(20 * np.log10(spec[0, :, band] / spec[1, :, band])).mean()
    assert diff_db > 2.0


def test_resampled_hrtfs_keep_their_level_and_onset():
    """An impulse response's frequency response must not change with the rate it is sampled at: the 16 kHz
    set used to lose 20 log10(44100 / 16000) = 8.8 dB against the late tail, whose level is rate-free."""
    native, low = load_hrtf(44100), load_hrtf(16000)
    nfft_native, nfft_low = 1024, 1024 * 16000 // 44100 + 1
    freqs_native = np.fft.rfftfreq(nfft_native, 1 / 44100)
    freqs_low = np.fft.rfftfreq(nfft_low, 1 / 16000)
    band = (freqs_native > 200) & (freqs_native < 6000)
    gain_native = np.abs(np.fft.rfft(native.hrir, n=nfft_native, axis=-1))[..., band]
    gain_low = np.abs(np.fft.rfft(low.hrir, n=nfft_low, axis=-1))
    gain_low = np.stack([np.interp(freqs_native[band], freqs_low, g) for g in gain_low.reshape(-1, len(freqs_low))])
    level = lambda g: 10 * np.log10(np.mean(g.reshape(-1) ** 2))  # noqa: E731
    assert abs(level(gain_low) - level(gain_native)) < 0.5
    # the trimmed lead before the earliest onset is the same time at both rates (about 0.18 ms)
    first = [min(_onset(ir) for ir in h.hrir.reshape(-1, h.num_taps)) / h.sample_rate for h in (native, low)]
    assert abs(first[0] - first[1]) < 2 / 16000  # a guard of 8 samples at 16 kHz put it 0.42 ms later


@pytest.mark.parametrize("rate", [44100, 16000])
def test_the_measurement_lead_is_trimmed_to_a_guard_of_8_native_samples(rate: int) -> None:
    """The file's leading silence (the measurement's travel time, 28 samples at 44.1 kHz) is cut down to 8
    samples at 44.1 kHz, the same 0.18 ms at every rate (3 samples at 16 kHz). Any more would put every
    early path later than the late tail, which starts at the straight-line travel time."""
    raw = np.load(KEMAR_FILE)["hrir"]
    raw_onsets = np.argmax(np.abs(raw) > 0.1 * np.abs(raw).max(axis=-1, keepdims=True), axis=-1)
    assert int(raw_onsets.min()) == 28
    h = load_hrtf(rate)
    onsets = np.argmax(np.abs(h.hrir) > 0.1 * np.abs(h.hrir).max(axis=-1, keepdims=True), axis=-1)
    assert int(onsets.min()) == round(8 * rate / 44100)
    if rate == 44100:  # native rate: the trimmed set is the file from sample 28 - 8 = 20 on
        np.testing.assert_array_equal(h.hrir, raw[..., 20:].astype(np.float32))


def test_a_missing_or_malformed_hrtf_file_is_named_with_its_cause(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot read HRTF file .*absent.npz"):
        load_hrtf(16000, tmp_path / "absent.npz")
    np.savez(tmp_path / "no_hrir.npz", azimuth=np.zeros(3))
    with pytest.raises(ValueError, match=r"HRTF file .*no_hrir.npz is malformed \(.*hrir"):
        load_hrtf(16000, tmp_path / "no_hrir.npz")
