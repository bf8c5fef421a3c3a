"""Binaural spectrogram observation exactly as SoundSpaces 1.0 computes it, in numpy and in batched torch.

Pipeline per ear: ``fftconvolve(sound, rir[:, c])[:sr]`` (full convolution truncated to one second), then
``|STFT|`` with n_fft 512, hop 160, Hann window of 400 samples (periodic, centred inside the 512-sample
frame), centred frames with zero padding, then 4x4 mean pooling where partial blocks are zero padded,
then ``log1p``. Channels are stacked last: (freq, time, 2). The numpy version is the readable reference
used by the gymnasium env; the torch version computes many observations at once on CPU or GPU and is
checked against the reference in tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.fft
import scipy.signal
import torch

N_FFT = 512
HOP_LENGTH = 160
WIN_LENGTH = 400
POOL = 4

# Observations computed per torch call. On a CPU a chunk of 64 one-second FFT convolutions (about 2.5 MB of
# spectra each) outgrows the caches and costs about 1.8x more per observation than chunks of 12-16
# (benchmarks/spectrogram_batch.py); a GPU wants large chunks.
CPU_BATCH = 16
ACCELERATOR_BATCH = 64


def default_batch(device: torch.device | str) -> int:
    """Spectrograms per torch call on ``device``: :data:`CPU_BATCH` on a CPU, :data:`ACCELERATOR_BATCH` else."""
    return CPU_BATCH if torch.device(device).type == "cpu" else ACCELERATOR_BATCH


def spectrogram_shape(sample_rate: int) -> tuple[int, int, int]:
    """(freq, time, 2) of the pooled spectrogram of a one-second signal: (65, 69, 2) at 44.1 kHz."""
    frames = 1 + sample_rate // HOP_LENGTH
    bins = N_FFT // 2 + 1
    return (-(-bins // POOL), -(-frames // POOL), 2)


def _hann_window_padded() -> np.ndarray:
    """Periodic Hann window of WIN_LENGTH samples centred in an N_FFT frame (librosa's convention)."""
    window = scipy.signal.get_window("hann", WIN_LENGTH, fftbins=True).astype(np.float64)
    left = (N_FFT - WIN_LENGTH) // 2
    return np.pad(window, (left, N_FFT - WIN_LENGTH - left))


def _mean_pool_np(mag: np.ndarray) -> np.ndarray:
    """POOLxPOOL mean over the last two axes; partial blocks count their zero padding (skimage block_reduce)."""
    f, t = mag.shape[-2:]
    pf, pt = (-f) % POOL, (-t) % POOL
    padded = np.pad(mag, [(0, 0)] * (mag.ndim - 2) + [(0, pf), (0, pt)])
    shape = padded.shape[:-2] + ((f + pf) // POOL, POOL, (t + pt) // POOL, POOL)
    return padded.reshape(shape).mean(axis=(-3, -1))


def stft_magnitude_np(signal: np.ndarray) -> np.ndarray:
    """|STFT| (N_FFT//2+1, frames) of a 1-D signal, centred frames, zero padding."""
    signal = np.asarray(signal, dtype=np.float32)
    pad = N_FFT // 2
    padded = np.pad(signal, (pad, pad))
    frames = 1 + (padded.size - N_FFT) // HOP_LENGTH
    idx = np.arange(N_FFT)[None, :] + HOP_LENGTH * np.arange(frames)[:, None]
    windowed = padded[idx] * _hann_window_padded().astype(np.float32)
    return np.abs(scipy.fft.rfft(windowed, axis=1)).T


def binaural_audio_np(sound: np.ndarray, rir: np.ndarray, sample_rate: int) -> np.ndarray:
    """(sample_rate, 2) received signal: per ear the full convolution truncated to one second."""
    sound = np.asarray(sound, dtype=np.float32)
    rir = np.asarray(rir, dtype=np.float32)
    if rir.ndim != 2 or rir.shape[1] != 2:
        raise ValueError(f"binaural RIR must have shape (L, 2), got {rir.shape}")
    out = np.zeros((sample_rate, 2), dtype=np.float32)
    for c in range(2):
        conv = scipy.signal.fftconvolve(sound, rir[:, c])[:sample_rate]
        out[: conv.size, c] = conv
    return out


def spectrogram_np(sound: np.ndarray, rir: np.ndarray, sample_rate: int) -> np.ndarray:
    """Reference spectrogram observation (freq, time, 2) float32 for one sound and one binaural RIR."""
    audio = binaural_audio_np(sound, rir, sample_rate)
    channels = [np.log1p(_mean_pool_np(stft_magnitude_np(audio[:, c]))) for c in range(2)]
    return np.stack(channels, axis=-1).astype(np.float32)


class TorchSpectrogram:
    """Batched spectrograms on a device: many (sound, RIR) pairs per call with one FFT convolution each.

    Sounds and RIRs are real tensors; the STFT window is built once per device.
    """

    def __init__(self, sample_rate: int, device: torch.device | str = "cpu") -> None:
        self.sample_rate = int(sample_rate)
        self.device = torch.device(device)
        self.window = torch.from_numpy(scipy.signal.get_window("hann", WIN_LENGTH, fftbins=True).astype(np.float32)).to(
            self.device
        )
        self.shape = spectrogram_shape(self.sample_rate)

    def audio(self, sounds: torch.Tensor, rirs: torch.Tensor) -> torch.Tensor:
        """(B, sr) sounds and (B, L, 2) RIRs -> (B, 2, sr) received signals (truncated full convolution)."""
        if sounds.ndim != 2 or rirs.ndim != 3 or rirs.shape[2] != 2 or sounds.shape[0] != rirs.shape[0]:
            raise ValueError(
                f"expected sounds (B, S) and rirs (B, L, 2), got {tuple(sounds.shape)}, {tuple(rirs.shape)}"
            )
        sr = self.sample_rate
        length = sounds.shape[1] + rirs.shape[1] - 1
        n = scipy.fft.next_fast_len(length, real=True)
        sound_f = torch.fft.rfft(sounds.float(), n=n)  # (B, F)
        rir_f = torch.fft.rfft(rirs.float().transpose(1, 2), n=n)  # (B, 2, F)
        conv = torch.fft.irfft(rir_f * sound_f[:, None, :], n=n)[..., :sr]
        if conv.shape[-1] < sr:
            conv = torch.nn.functional.pad(conv, (0, sr - conv.shape[-1]))
        return conv

    def from_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 2, sr) signals -> (B, freq, time, 2) pooled log spectrograms."""
        b = audio.shape[0]
        spec = torch.stft(
            audio.reshape(b * 2, -1),
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        parts = torch.view_as_real(spec)  # hypot: the same magnitudes as .abs(), which is slower on the CPU
        spec = torch.hypot(parts[..., 0], parts[..., 1])  # (2B, bins, frames)
        f, t = spec.shape[-2:]
        spec = torch.nn.functional.pad(spec, (0, (-t) % POOL, 0, (-f) % POOL))
        pooled = torch.nn.functional.avg_pool2d(spec[:, None], POOL)[:, 0]
        return torch.log1p(pooled).reshape(b, 2, *pooled.shape[-2:]).permute(0, 2, 3, 1).contiguous()

    def from_rirs(self, sounds: torch.Tensor, rirs: list[np.ndarray], batch: int | None = None) -> torch.Tensor:
        """(B, sr) sounds and B binaural RIRs (L_i, 2) of any lengths -> (B, freq, time, 2), ``batch`` at a
        time (default: :func:`default_batch` of the device; each chunk zero-pads its RIRs to its longest)."""
        return torch.cat([self.from_audio(audio) for audio in self._audio_chunks(sounds, rirs, batch)])

    def audio_from_rirs(self, sounds: torch.Tensor, rirs: list[np.ndarray], batch: int | None = None) -> torch.Tensor:
        """(B, sr) sounds and B binaural RIRs (L_i, 2) of any lengths -> (B, 2, sr) received signals, chunked
        as :meth:`from_rirs`."""
        return torch.cat(list(self._audio_chunks(sounds, rirs, batch)))

    def _audio_chunks(self, sounds: torch.Tensor, rirs: list[np.ndarray], batch: int | None) -> Iterator[torch.Tensor]:
        batch = int(batch or default_batch(self.device))
        if batch <= 0:
            raise ValueError(f"spectrogram batch must be positive, got {batch}")
        for start in range(0, len(rirs), batch):
            chunk = rirs[start : start + batch]
            padded = np.zeros((len(chunk), max(max(len(r) for r in chunk), 1), 2), dtype=np.float32)
            for j, r in enumerate(chunk):
                padded[j, : len(r)] = r
            chunk_sounds = sounds[start : start + len(chunk)].to(self.device)
            yield self.audio(chunk_sounds, torch.from_numpy(padded).to(self.device))

    def __call__(self, sounds: torch.Tensor, rirs: torch.Tensor) -> torch.Tensor:
        """(B, sr) sounds and (B, L, 2) RIRs -> (B, freq, time, 2) float32 spectrogram observations."""
        return self.from_audio(self.audio(sounds.to(self.device), rirs.to(self.device)))
