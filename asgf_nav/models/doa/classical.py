"""Non-selective binaural DoA baselines: GCC-PHAT, SRP-PHAT and MUSIC on a two-microphone model of the
head, binaural template matching against the KEMAR HRTF, and a supervised Gaussian-mixture regression on
interaural features (after binaural GLLiM); and a spectral-shape descriptor for measuring how well a
prompt tells a target from a distractor at all.

The two ears are treated as a free-field pair 0.18 m apart on the left-right axis. Such a pair only
measures the lateral angle (time difference), so GCC-PHAT, SRP-PHAT and MUSIC cannot tell front from
back: their estimates mirror about the interaural axis, and this module returns the front-hemisphere
solution. The regression learns from labelled examples and can use the level and spectral cues of the
head for front/back, but like the classical methods it has no way to tell the target from a distractor.
Template matching knows the head exactly (the HRTF the embedded world renders with), so it answers over
the full circle: it measures how far a model of the head, rather than learning, gets in these rooms; its
onset-weighted variant listens, like the precedence effect, to where each new sound event first arrives.
:class:`HrirWaveformMatch` reads a single wavefront (the direct-sound reference) against the whole HRIRs.
"""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.models.doa.config import GMM_PCA_DIMS
from asgf_nav.models.doa.features import EPS, lateral_fold, wrap_degrees
from asgf_nav.models.doa.rooms import PAIR_SPACING, SPEED_OF_SOUND

EAR_SPACING = PAIR_SPACING  # metres: the ears as the free-field pair of the ``shoebox_pair`` rooms


def hann_stft(audio: np.ndarray, nfft: int, hop: int) -> np.ndarray:
    """(2, N) -> (2, nfft // 2 + 1, frames) Hann STFT."""
    frames = 1 + max(0, audio.shape[1] - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(frames)[:, None]
    return np.fft.rfft(audio[:, idx] * np.hanning(nfft), axis=-1).transpose(0, 2, 1)


def gcc_phat(audio: np.ndarray, sample_rate: int, upsample: int = 16) -> float:
    """Front-hemisphere azimuth (deg) from the GCC-PHAT delay of a (2, N) left/right signal."""
    n = 2 * audio.shape[1]
    cross = np.fft.rfft(audio[0], n) * np.conj(np.fft.rfft(audio[1], n))
    cc = np.fft.irfft(cross / (np.abs(cross) + EPS), n * upsample)
    max_shift = int(np.ceil(EAR_SPACING / SPEED_OF_SOUND * sample_rate * upsample))
    cc = np.concatenate([cc[-max_shift:], cc[: max_shift + 1]])
    lag = (np.argmax(np.abs(cc)) - max_shift) / (sample_rate * upsample)  # < 0: right ear lags -> left
    return float(wrap_degrees(np.rad2deg(np.arcsin(np.clip(-lag * SPEED_OF_SOUND / EAR_SPACING, -1, 1)))))


def level_rise(spec: np.ndarray) -> np.ndarray:
    """(2, F, T) binaural STFT -> (F, T) rise of each bin's log power over the previous frame (>= 0):
    large where a new sound event first arrives, small under the reflections that follow it."""
    level = np.log((np.abs(spec) ** 2).sum(axis=0) + EPS)
    return np.maximum(0.0, np.diff(level, axis=1, prepend=level[:, :1]))


class ArrayDoa:
    """pyroomacoustics' SRP-PHAT or MUSIC on the two-ear array, searched over 1-degree azimuths."""

    def __init__(self, method: str, sample_rate: int, nfft: int = 512, freq_range=(200.0, 950.0)) -> None:
        if method not in ("SRP", "MUSIC"):
            raise ValueError(f"unknown array DoA method {method!r}; expected 'SRP' or 'MUSIC'")
        # x = front, y = left: channel 0 (left ear) at +y
        mics = np.array([[0.0, 0.0], [EAR_SPACING / 2, -EAR_SPACING / 2]])
        self.nfft = nfft
        self.freq_range = list(freq_range)
        self.algo = pra.doa.algorithms[method](
            mics, sample_rate, nfft, c=SPEED_OF_SOUND, num_src=1, azimuth=np.deg2rad(np.arange(360.0))
        )

    def __call__(self, audio: np.ndarray) -> float:
        """Azimuth (deg) of the strongest source in a (2, N) left/right signal (front/back ambiguous)."""
        self.algo.locate_sources(hann_stft(audio, self.nfft, self.nfft // 2), freq_range=self.freq_range)
        return float(lateral_fold(np.rad2deg(self.algo.azimuth_recon[0])))


class HrtfTemplateDoa:
    """Binaural template matching: the clip's time-averaged interaural cross-spectrum against the KEMAR
    HRTF's of every measured direction (azimuth steps of ``hrtf`` at ``elevations``, the best taken).

    Score per direction: the sum over bins of ``coherence * cos(IPD - IPD_hrtf)``; the interaural
    coherence weights bins the direct sound dominates. Only phase is matched: time-averaged level
    differences in reverberant rooms lowered accuracy in every weighting tried.

    ``onset_power > 0`` models the precedence effect: instead of averaging the cross-spectrum over the
    clip, each time-frequency bin's unit interaural phase counts with the rise of its level over the
    previous frame (``max(0, d log power) ** onset_power``), so the first arrival of each new sound event
    outweighs the reflections that follow it. The settings of :meth:`precedence` (256-point frames every 64
    samples, power 1) were chosen on the validation scenes and sounds.
    """

    def __init__(
        self,
        sample_rate: int,
        nfft: int = 512,
        elevations=(-20.0, -10.0, 0.0, 10.0, 20.0),
        freq_range=(100.0, 7500.0),
        azimuth_step: float = 5.0,
        hop: int | None = None,
        onset_power: float = 0.0,
    ) -> None:
        hrtf = load_hrtf(sample_rate)
        if hrtf.num_taps > nfft:
            raise ValueError(f"nfft {nfft} is shorter than the HRIRs ({hrtf.num_taps} taps)")
        if onset_power < 0:
            raise ValueError(f"onset_power must be >= 0 (0 = time-averaged), got {onset_power}")
        self.nfft = nfft
        self.hop = hop or nfft // 2
        self.onset_power = onset_power
        self.azimuths = np.arange(0.0, 360.0, azimuth_step)
        idx = np.stack([hrtf.nearest(self.azimuths, np.full_like(self.azimuths, e)) for e in elevations])
        spectra = np.fft.rfft(hrtf.hrir[idx], n=nfft, axis=-1)  # (E, A, 2, F)
        self.template_ipd = np.angle(spectra[:, :, 0] * np.conj(spectra[:, :, 1]))  # (E, A, F)
        freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
        self.band = (freqs >= freq_range[0]) & (freqs <= freq_range[1])

    @classmethod
    def precedence(cls, sample_rate: int, azimuth_step: float = 5.0) -> HrtfTemplateDoa:
        """The onset-weighted variant with the settings chosen on the validation scenes."""
        return cls(sample_rate, nfft=256, hop=64, onset_power=1.0, azimuth_step=azimuth_step)

    def __call__(self, audio: np.ndarray) -> float:
        """Azimuth (deg, full circle) of a (2, N) left/right signal."""
        return float(self.azimuths[np.argmax(self.scores(audio))])

    def scores(self, audio: np.ndarray) -> np.ndarray:
        """(A,) match of a (2, N) left/right signal per azimuth of ``self.azimuths`` (its best elevation),
        divided by the total bin weight so that it lies in [-1, 1] whatever the clip's level: the
        templates' evidence, in a unit that can be weighed against another method's."""
        spec = hann_stft(audio, self.nfft, self.hop)  # (2, F, T)
        if self.onset_power > 0:
            per_bin = spec[0] * np.conj(spec[1])
            onset = level_rise(spec) ** self.onset_power
            cross = (onset * per_bin / (np.abs(per_bin) + EPS)).sum(axis=1)
            weight = np.abs(cross) * self.band
        else:
            cross = (spec[0] * np.conj(spec[1])).sum(axis=1)
            power = (np.abs(spec) ** 2).sum(axis=2)
            weight = np.abs(cross) / np.sqrt(power[0] * power[1] + EPS) * self.band
        score = (weight * np.cos(np.angle(cross) - self.template_ipd)).sum(axis=-1)  # (E, A)
        return score.max(axis=0) / (weight.sum() + EPS)


class HrirWaveformMatch:
    """Whole-waveform matching of a short binaural window against every KEMAR HRIR pair within
    ``max_elevation``: the cross-correlation summed over both ears at its best lag, normalised by both
    energies. Time and level differences and the pinnae's spectral shape count together, so it is the
    strongest head-model reading of one arriving wavefront; it does not apply to a clip with a sound
    playing, whose spectrum is unknown. Used for the direct-sound reference of the benchmark.

    The lag is searched on a grid ``upsample`` times finer than a sample (band-limited interpolation of
    the cross-correlation): a wavefront rendered at another rate and resampled (the baked scenes, 44.1 kHz)
    arrives between samples, and at whole-sample lags its own HRIR loses to others (81 % of anechoic
    KEMAR responses found within 5 degrees at ``upsample=1``, 100 % at 16)."""

    def __init__(self, sample_rate: int, max_elevation: float = 20.0, upsample: int = 16) -> None:
        hrtf = load_hrtf(sample_rate)
        keep = np.abs(hrtf.elevation) <= max_elevation + 1e-6
        if not keep.any():
            raise ValueError(f"no HRIR within {max_elevation} degrees of elevation")
        self.hrir = hrtf.hrir[keep].astype(np.float64)  # (D, 2, T)
        self.azimuths = np.asarray(hrtf.azimuth[keep], dtype=np.float64)
        self.norm = np.sqrt((self.hrir**2).sum(axis=(1, 2)))
        if upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {upsample}")
        self.upsample = int(upsample)
        self._spectra: dict[int, np.ndarray] = {}  # per FFT size: windows of one length share it

    def __call__(self, window: np.ndarray) -> float:
        """Azimuth (deg, full circle) of the HRIR pair that best matches a (2, W) left/right window."""
        window = np.asarray(window, dtype=np.float64)
        nfft = 1 << int(np.ceil(np.log2(window.shape[-1] + self.hrir.shape[-1])))  # no circular wrap
        if nfft not in self._spectra:
            self._spectra[nfft] = np.fft.rfft(self.hrir, n=nfft, axis=-1)
        spectra = self._spectra[nfft]
        cross = (np.fft.rfft(window, n=nfft, axis=-1)[None] * np.conj(spectra)).sum(axis=1)  # (D, F)
        cc = np.fft.irfft(cross, n=nfft * self.upsample, axis=-1) * self.upsample  # fractional lags too
        score = cc.max(axis=1) / (self.norm * np.sqrt((window**2).sum()) + EPS)
        return float(self.azimuths[np.argmax(score)])


def spectral_shape(
    audio: np.ndarray, sample_rate: int, bands: int = 40, freq_range=(60.0, 8000.0), nfft: int = 512
) -> np.ndarray:
    """Unit-norm, gain-invariant descriptor of what a (N,) or (C, N) signal sounds like: per log-spaced
    band, the time-averaged log energy (relative to its mean over bands) and its spread over frames.

    The energy is summed over channels. A fixed, untrained similarity, so unheard sounds are treated like
    heard ones: it shows how far the prompt, another recording of the target's category, points at the
    target rather than at the distractor (``eval.doa_eval.prompt_choice_reference``).
    """
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    power = (np.abs(hann_stft(audio, nfft, nfft // 2)) ** 2).sum(axis=0)  # (F, T)
    return spectral_shape_of_power(power, sample_rate, bands, freq_range)


def spectral_shape_of_power(
    power: np.ndarray, sample_rate: int, bands: int = 40, freq_range=(60.0, 8000.0)
) -> np.ndarray:
    """:func:`spectral_shape` of an (F, T) short-time power spectrum (F = nfft // 2 + 1 bins), for
    a share of a clip's bins rather than a whole signal."""
    power = np.asarray(power, dtype=np.float64)
    power = power / (power.mean() + 1e-30)  # a floor relative to the level keeps the descriptor gain-invariant
    freqs = np.fft.rfftfreq(2 * (power.shape[0] - 1), 1.0 / sample_rate)
    edges = np.geomspace(freq_range[0], min(freq_range[1], sample_rate / 2), bands + 1)
    member = (freqs[None, :] >= edges[:-1, None]) & (freqs[None, :] < edges[1:, None])  # (bands, F)
    member = member[member.any(axis=1)]  # a band narrower than the FFT bin spacing holds no bin: drop it
    level = np.log(member.astype(np.float64) @ power + 1e-10)  # (bands, T)
    shape = np.concatenate([level.mean(axis=1) - level.mean(), level.std(axis=1)])
    shape -= shape.mean()
    return shape / (np.linalg.norm(shape) + EPS)


# --------------------------------------------------------------------------------------------- GMM
def interaural_summary(audio: np.ndarray, nfft: int = 512, bands: int = 32) -> np.ndarray:
    """(2, N) -> energy-weighted time average of cos/sin IPD and ILD in ``bands`` bands: (3 * bands,)."""
    spec = hann_stft(audio, nfft, nfft // 2)[:, 1 : 1 + (nfft // 2 // bands) * bands]
    cross = spec[0] * np.conj(spec[1])
    weight = np.abs(spec[0]) * np.abs(spec[1]) + EPS
    ipd = np.angle(cross)
    ild = 20 * np.log10((np.abs(spec[0]) + EPS) / (np.abs(spec[1]) + EPS))
    feats = []
    for values in (np.cos(ipd), np.sin(ipd), np.clip(ild, -30, 30) / 10):
        num = (values * weight).reshape(bands, -1, values.shape[1]).sum(axis=(1, 2))
        den = weight.reshape(bands, -1, weight.shape[1]).sum(axis=(1, 2))
        feats.append(num / den)
    return np.concatenate(feats)


class GmmRegression:
    """Gaussian-mixture regression from PCA-reduced interaural features to (cos, sin) of the azimuth.

    A joint GMM over [x, y] gives E[y | x] as a gated mixture of linear regressions, the forward
    counterpart of binaural GLLiM's inverse mixture of locally linear maps.
    """

    def __init__(self, components: int = 12, dims: int = GMM_PCA_DIMS, seed: int = 0) -> None:
        self.pca = PCA(dims, random_state=seed)
        self.gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-3, random_state=seed)
        self.dims = dims

    def fit(self, features: np.ndarray, azimuth_deg: np.ndarray) -> GmmRegression:
        x = self.pca.fit_transform(features)
        a = np.deg2rad(azimuth_deg)
        self.gmm.fit(np.concatenate([x, np.cos(a)[:, None], np.sin(a)[:, None]], axis=1))
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = self.pca.transform(features)
        d = self.dims
        log_resp, expected = [], []
        for k in range(self.gmm.n_components):
            mu, cov = self.gmm.means_[k], self.gmm.covariances_[k]
            cxx, cyx = cov[:d, :d], cov[d:, :d]
            diff = x - mu[:d]
            sol = np.linalg.solve(cxx, diff.T).T
            _, logdet = np.linalg.slogdet(cxx)
            log_resp.append(np.log(self.gmm.weights_[k]) - 0.5 * (logdet + np.sum(diff * sol, axis=1)))
            expected.append(mu[d:] + sol @ cyx.T)
        log_resp = np.stack(log_resp, axis=1)
        resp = np.exp(log_resp - log_resp.max(axis=1, keepdims=True))
        resp /= resp.sum(axis=1, keepdims=True)
        y = np.einsum("nk,knj->nj", resp, np.stack(expected))
        return wrap_degrees(np.rad2deg(np.arctan2(y[:, 1], y[:, 0])))
