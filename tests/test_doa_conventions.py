"""Interaural feature conventions the packaged DoA weights were trained with, and example draws."""

import numpy as np
import pytest
import torch

from asgf_nav.models.doa.features import (
    EPS,
    AzimuthGrid,
    StftConfig,
    binaural_stft,
    compressed_magnitude,
    interaural_features,
    relative_azimuth,
)

SR = 16000


def _left_leading(n=SR // 2, delay=2, gain=0.5, seed=0):
    """Noise that reaches the left ear first and louder: right = gain x left delayed by ``delay`` samples."""
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(n + delay)).float()
    return torch.stack([x[delay:], gain * x[:-delay]])[None]  # (1, 2, n)


def test_the_target_is_laplacian_in_circular_distance_with_the_configured_scale():
    target = AzimuthGrid(bin_width=5.0, laplace_scale=5.0).encode(np.array([0.0]))[0].double()
    ratios = (target / target[0]).numpy()
    np.testing.assert_allclose(ratios[[1, 2, -1, -2]], np.exp([-1.0, -2.0, -1.0, -2.0]), rtol=1e-5)  # 355 deg: 5 away


def test_relative_azimuth_stays_below_360_a_hair_to_the_right():
    """A source a hair to the right of straight ahead is at -1e-16 deg, which np.mod alone turns into 360.0."""
    assert float(relative_azimuth(np.zeros(3), np.array([1e-16, 0.0, -1.0]), 0.0)) == 0.0


def test_relative_azimuth_is_of_the_source_as_seen_from_the_receiver():
    """The direction is source minus receiver, wherever the receiver stands; the same offset, the same angle."""
    receiver = np.array([2.0, 0.0, 3.0])
    for offset in ([0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]):
        here = float(relative_azimuth(receiver, receiver + np.array(offset), 0.0))
        assert here == pytest.approx(float(relative_azimuth(np.zeros(3), np.array(offset), 0.0)))
    assert float(relative_azimuth(receiver, np.array([1.0, 0.0, 3.0]), 0.0)) != float(
        relative_azimuth(receiver, np.array([3.0, 0.0, 3.0]), 0.0)
    )  # left and right of it differ


def test_ild_is_clipped_at_30_db_where_an_ear_is_silent():
    spec = torch.zeros(1, 2, 4, 3, dtype=torch.complex64)
    spec[:, 0] = 1.0  # the right ear hears nothing: 120 dB before the clip
    assert torch.equal(interaural_features(spec)[:, 2], torch.full((1, 3, 4), 3.0))


def test_ild_is_left_over_right_and_ipd_is_left_minus_right_phase():
    cfg = StftConfig()
    feats = interaural_features(binaural_stft(_left_leading(), cfg))  # (1, 4, T, F)
    ild_db = 10.0 * feats[0, 2]
    assert abs(float(ild_db[:, 4:200].median()) - 20 * np.log10(1 / 0.5)) < 0.5  # +6 dB: left louder
    # right lags by 2 samples: phase_L - phase_R = +2 pi f 2 / sr, positive below sr/4
    low = slice(4, 100)
    assert float(feats[0, 1][:, low].median()) > 0.1
    expected = 2 * np.pi * np.arange(256)[low] * 2 / cfg.n_fft
    np.testing.assert_allclose(feats[0, 1][:, low].median(0).values.numpy(), np.sin(expected), atol=0.05)


def test_level_feature_is_per_example():
    """The log level has each example's own mean removed: an example's features do not depend on its batch."""
    cfg = StftConfig()
    a = _left_leading(seed=1)
    b = 30.0 * _left_leading(seed=2)
    alone = interaural_features(binaural_stft(a, cfg))
    batched = interaural_features(binaural_stft(torch.cat([a, b]), cfg))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    assert abs(float(batched[1, 3].mean())) < 1e-4


def test_stft_keeps_dc_and_drops_nyquist():
    cfg = StftConfig()
    audio = torch.ones(1, 2, SR // 4)  # a constant: all energy in bin 0
    spec = binaural_stft(audio, cfg).abs()
    assert spec.shape[2] == cfg.num_bins == cfg.n_fft // 2
    mid = spec.shape[-1] // 2
    # a periodic Hann window of 512 sums to 256 (bin 0) and has 128 at bin 1
    np.testing.assert_allclose(spec[0, 0, :3, mid].numpy(), [256.0, 128.0, 0.0], atol=1e-2)


def test_decoding_is_the_symmetric_circular_mean_about_the_peak_in_0_to_360() -> None:
    """decode refines the argmax bin by the weighted circular mean of the two bins either side and answers in
    [0, 360): a posterior symmetric about bin 10 decodes to 50 degrees, one symmetric about bin 71 (its
    neighbours on both sides of 0) to 355, not -5; a lopsided one to the mean of its unit vectors."""
    grid = AzimuthGrid(bin_width=5.0)
    posterior = np.zeros((3, 72))
    posterior[0, [8, 9, 10, 11, 12]] = [0.1, 0.2, 0.4, 0.2, 0.1]
    posterior[1, [69, 70, 71, 0, 1]] = [0.1, 0.2, 0.4, 0.2, 0.1]
    posterior[2, [71, 0, 1]] = [0.3, 0.5, 0.2]  # peak at 0 degrees, pulled towards 355
    lopsided = np.angle(0.3 * np.exp(1j * np.deg2rad(355.0)) + 0.5 + 0.2 * np.exp(1j * np.deg2rad(5.0)), deg=True)
    np.testing.assert_allclose(grid.decode(posterior), [50.0, 355.0, lopsided % 360.0], atol=1e-9)
    assert 359.0 < grid.decode(posterior)[2] < 360.0
    # a network's output as it comes (a float32 tensor that requires grad, on any device) decodes the same
    import torch

    output = torch.tensor(posterior, dtype=torch.float32, requires_grad=True)
    np.testing.assert_allclose(grid.decode(output), grid.decode(posterior), atol=1e-4)


def test_a_peak_at_0_degrees_balanced_to_rounding_decodes_to_0_not_360() -> None:
    """Neighbours of bin 0 that cancel but for rounding give a circular mean of about -1e-16 degrees; the
    answer stays in [0, 360): 0, not 360 (np.mod alone rounds it up)."""
    posterior = np.zeros((1, 72))
    posterior[0, [71, 0, 1]] = [0.3 * (1 + 1e-15), 1.0, 0.3]
    assert float(AzimuthGrid(bin_width=5.0).decode(posterior)[0]) == 0.0


def test_the_grid_rejects_negative_widths_and_keeps_every_bin_of_a_width_a_hair_above_a_divisor() -> None:
    """A negative bin width is refused; a width accepted as a divisor of 360 though a rounding error above it
    (51.4285715, 7 bins) keeps its 7 bins, not the 6 that truncating 6.99999999 would leave."""
    with pytest.raises(ValueError, match="must divide 360"):
        AzimuthGrid(bin_width=-5.0)
    grid = AzimuthGrid(bin_width=51.4285715)
    assert grid.num_bins == 7 and grid.encode(np.array([0.0])).shape == (1, 7)


@pytest.mark.parametrize("width", [0.0, 400.0, 1e9, float("inf"), float("nan")])
def test_the_grid_refuses_a_width_that_leaves_no_bins(width: float) -> None:
    """A width of 0, past 360 degrees or nan is refused by name, not turned into a grid of 0 bins (whose
    posteriors are empty and whose loss is 0) or a division by zero."""
    with pytest.raises(ValueError, match="must divide 360"):
        AzimuthGrid(bin_width=width)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_the_grid_refuses_a_laplacian_scale_that_is_not_positive(scale: float) -> None:
    """A target scale of 0 would make every training target nan; it is refused where the grid is made."""
    with pytest.raises(ValueError, match="scale must be a positive"):
        AzimuthGrid(laplace_scale=scale)


def test_a_laplacian_scale_far_under_the_bin_width_gives_the_nearest_bins_not_nan() -> None:
    """exp(-d / 0.02 deg) underflows to 0 in every bin for an azimuth between bin centres: the normalised target
    was 0 / 0. Now the nearest bin (or both, half each, midway) holds the target."""
    target = AzimuthGrid(bin_width=5.0, laplace_scale=0.02).encode(np.array([2.5, 0.0, 6.0])).double().numpy()
    assert np.isfinite(target).all()
    np.testing.assert_allclose(target.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(target[0, [0, 1]], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(target[[1, 2], [0, 1]], [1.0, 1.0], atol=1e-6)


def test_decoding_averages_the_two_bins_either_side_of_the_peak() -> None:
    """decode's circular mean reaches two bins past the peak: a second neighbour pulls the answer towards it
    (a window of one bin would leave bin 8 out)."""
    posterior = np.zeros((1, 72))
    posterior[0, [8, 10, 11]] = [0.1, 0.4, 0.2]  # peak at 50 degrees, bin 9 empty
    mean = np.angle(np.sum([0.1, 0.4, 0.2] * np.exp(1j * np.deg2rad([40.0, 50.0, 55.0]))), deg=True)
    np.testing.assert_allclose(AzimuthGrid(bin_width=5.0).decode(posterior), [mean], atol=1e-9)


def test_decoding_refuses_a_posterior_over_another_grid() -> None:
    """A posterior with another number of bins is refused by name, not read modulo the grid's bins."""
    grid = AzimuthGrid(bin_width=5.0)
    for bins in (144, 36):  # 144: argmax read modulo 72; 36: neighbours past the end
        with pytest.raises(ValueError, match=r"posterior must be \(B, 72\)"):
            grid.decode(np.full((2, bins), 1.0 / bins))


def test_silent_bins_carry_no_interaural_difference_and_sit_on_the_magnitude_floor() -> None:
    """Where both ears are silent, ILD is 0 dB and the phase difference 0 (not the -30 dB clip of a silent
    left ear); the compressed magnitude has the floor EPS**0.3 per ear, averaged over the ears."""
    spec = torch.zeros(1, 2, 4, 3, dtype=torch.complex64)
    spec[0, 0, 0] = 8.0  # bin 0: the left ear hears |X| = 8, the right ear nothing
    feats = interaural_features(spec)  # (1, 4, T, F)
    assert torch.equal(feats[0, 2, :, 1:], torch.zeros(3, 3))  # ILD / 10 dB where both ears are silent
    assert torch.equal(feats[0, 0, :, 1:], torch.ones(3, 3)) and torch.equal(feats[0, 1, :, 1:], torch.zeros(3, 3))
    magnitude = compressed_magnitude(spec)  # (1, T, F)
    floor = EPS**0.3
    torch.testing.assert_close(magnitude[0, :, 1:], torch.full((3, 3), floor))
    torch.testing.assert_close(magnitude[0, :, 0], torch.full((3,), 0.5 * (8.0**0.3 + floor)))
