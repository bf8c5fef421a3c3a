"""Polyphase resampling in torch, sample for sample the filter of ``scipy.signal.resample_poly``.

Received audio is rendered where the env runs (on a GPU when there is one) at the RIR rate, while the DoA
head listens at its own training rate. Resampling in torch keeps the signal on its device instead of a
round trip through numpy, and one strided matrix product replaces scipy's per-row loop on the CPU.

scipy upsamples by ``up``, filters with a Kaiser-windowed sinc (beta 5, ``20 * max(up, down) + 1`` taps)
and keeps every ``down``-th sample. Output sample ``j * up + r`` then reads the inputs ``j * down + t``
through tap ``h[(r + R) * down - t * up]`` (R: scipy's leading samples removed), a weight that does not
depend on ``j``. So the whole resampler is a (taps, up) matrix applied to input windows taken every
``down`` samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.signal import firwin


class PolyphaseResampler:
    """``source_rate`` -> ``target_rate`` along the last axis, zero padded at both ends as scipy's default."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
        g = math.gcd(int(source_rate), int(target_rate))
        self.up, self.down = int(target_rate) // g, int(source_rate) // g
        up, down = self.up, self.down
        self.first_tap = 0
        self._weights = np.zeros((0, 1))  # equal rates: the identity, no filter
        self._by_key: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        if up == down == 1:
            return
        half_len = 10 * max(up, down)
        h = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
        pre_pad = down - half_len % down
        h = np.concatenate([np.zeros(pre_pad), h])
        removed = (half_len + pre_pad) // down
        # taps t (input offset from j * down) that reach some output phase r
        self.first_tap = -((len(h) - 1 - removed * down) // up)  # ceil((removed*down - len(h) + 1) / up)
        last_tap = (up - 1 + removed) * down // up
        taps = np.arange(self.first_tap, last_tap + 1)
        index = (np.arange(up)[None, :] + removed) * down - taps[:, None] * up  # (taps, up)
        valid = (index >= 0) & (index < len(h))
        self._weights = np.where(valid, h[np.clip(index, 0, len(h) - 1)], 0.0)

    def output_length(self, n: int) -> int:
        return -(-n * self.up // self.down)

    def weights(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._by_key:
            self._by_key[key] = torch.as_tensor(self._weights, dtype=dtype, device=device)
        return self._by_key[key]

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(..., N) floating-point signals -> (..., ceil(N * up / down)) on the same device and dtype."""
        if not torch.is_floating_point(audio):
            raise TypeError(f"resampling needs floating-point audio, got {audio.dtype}")
        if self.up == self.down == 1:
            return audio.clone()
        n = audio.shape[-1]
        n_out = self.output_length(n)
        blocks = -(-n_out // self.up)  # output blocks j, each of up samples
        weights = self.weights(audio.device, audio.dtype)
        taps = weights.shape[0]
        # padded[k] = audio[k + first_tap], long enough for the last block's window
        left = max(0, -self.first_tap)
        right = max(0, (blocks - 1) * self.down + self.first_tap + taps - n)
        flat = audio.reshape(-1, n)
        padded = torch.nn.functional.pad(flat, (left, right))[:, max(0, self.first_tap) :]
        windows = padded.unfold(-1, taps, self.down)[:, :blocks]  # (M, blocks, taps)
        out = (windows @ weights).reshape(flat.shape[0], blocks * self.up)[:, :n_out]
        return out.reshape(*audio.shape[:-1], n_out)
