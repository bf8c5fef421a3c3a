"""The torch polyphase resampler against scipy.signal.resample_poly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from asgf_nav.acoustics.resample import PolyphaseResampler


@pytest.mark.parametrize(
    ("source", "target"), [(44100, 16000), (16000, 44100), (48000, 16000), (16000, 8000), (22050, 16000), (3, 2)]
)
def test_matches_scipy_sample_for_sample(source: int, target: int) -> None:
    resampler = PolyphaseResampler(source, target)
    rng = np.random.default_rng(source + target)
    for n in (1, 7, 100, 1001, 12345):
        x = rng.standard_normal((3, 2, n))
        expected = resample_poly(x, target, source, axis=-1)
        got = resampler(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape, (n, got.shape, expected.shape)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_keeps_dtype_and_band_limits() -> None:
    """44.1 -> 16 kHz: a 1 kHz tone passes at unit gain, a 10 kHz tone (above the new 8 kHz Nyquist) comes
    out more than 50 dB down instead of aliasing to 6 kHz."""
    resampler = PolyphaseResampler(44100, 16000)
    t = torch.arange(44100, dtype=torch.float32) / 44100
    tones = torch.stack([torch.sin(2 * torch.pi * 1000 * t), torch.sin(2 * torch.pi * 10000 * t)])
    out = resampler(tones)
    assert out.dtype == torch.float32 and out.shape == (2, 16000)
    middle = out[:, 2000:-2000]  # away from the zero-padded ends
    rms = middle.square().mean(dim=-1).sqrt()
    assert abs(float(rms[0]) - 2**-0.5) < 1e-3
    assert 20 * np.log10(float(rms[1] / rms[0])) < -50


def test_equal_rates_and_bad_input() -> None:
    x = torch.randn(2, 50, dtype=torch.float64)
    same = PolyphaseResampler(16000, 16000)(x)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError, match="positive"):
        PolyphaseResampler(0, 16000)
    with pytest.raises(TypeError, match="floating-point"):
        PolyphaseResampler(44100, 16000)(torch.ones(10, dtype=torch.int64))
