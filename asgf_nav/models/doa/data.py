"""Selective-DoA examples: a target and a distractor of another category at two source positions heard
from one pose, mixed at a chosen SNR, with a cross-instance prompt and the target's direct-path azimuth.

Sounds come from the sound bank with its heard/unheard splits respected: training targets and
distractors are drawn from the ``train`` split, evaluation ones from ``test`` (unheard) or ``train``
(heard sounds in unseen rooms). The prompt is a different instance of the target's category
(``SoundBank.other_instance``) from the training split, so a test sound is never its own prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from asgf_nav.models.doa.rooms import RirPool
from asgf_nav.sounds.bank import SoundBank

logger = logging.getLogger(__name__)


@dataclass
class DoaBatch:
    mixture: torch.Tensor  # (B, 2, N) binaural mixture, unit RMS
    target: torch.Tensor  # (B, 2, N) the target's binaural signal on the same scale
    prompt: torch.Tensor  # (B, N) dry reference clip of another instance of the target's category
    category: torch.Tensor  # (B,) long index into the sampler's category list
    azimuth: torch.Tensor  # (B,) degrees, the target's direct path
    distractor_azimuth: torch.Tensor  # (B,) degrees
    line_of_sight: torch.Tensor  # (B,) bool: the target's direct path reaches the listener

    def __len__(self) -> int:
        return int(self.azimuth.shape[0])

    def slice(self, start: int, stop: int) -> DoaBatch:
        return DoaBatch(*(getattr(self, f)[start:stop] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(batches: list[DoaBatch]) -> DoaBatch:
        fields = DoaBatch.__dataclass_fields__
        return DoaBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in fields))

    def save(self, path) -> None:
        from asgf_nav.io import atomic_write

        def _write(p) -> None:
            with open(p, "wb") as f:
                np.savez(f, **{k: getattr(self, k).numpy() for k in self.__dataclass_fields__})

        atomic_write(path, _write)

    @classmethod
    def load(cls, path) -> DoaBatch:
        data = np.load(path)
        return cls(*(torch.from_numpy(data[k]) for k in cls.__dataclass_fields__))


def _loudest_window(signal: np.ndarray, length: int, hop: int) -> int:
    """Start of the ``length``-sample window with the most energy (signal (..., N), last axis time)."""
    energy = np.cumsum(np.concatenate([[0.0], (signal.reshape(-1, signal.shape[-1]) ** 2).sum(0)]))
    starts = np.arange(0, max(1, signal.shape[-1] - length + 1), hop)
    return int(starts[np.argmax(energy[np.minimum(starts + length, signal.shape[-1])] - energy[starts])])


class DoaExampleSampler:
    """Draws :class:`DoaBatch` es from one RIR pool and one sound split, on the fly."""

    def __init__(
        self,
        bank: SoundBank,
        pool: RirPool,
        sound_split: str,
        clip_seconds: float = 0.5,
        prompt_split: str = "train",
        categories: list[str] | None = None,
        targets: str = "all",
    ) -> None:
        """``targets="line_of_sight"`` draws targets only among sources the direct path reaches: behind a
        wall the direct-path label cannot be heard, and training on it is label noise."""
        if targets not in ("all", "line_of_sight"):
            raise ValueError(f"targets must be 'all' or 'line_of_sight', got {targets!r}")
        self.bank = bank
        self.pool = pool
        self.sample_rate = pool.sample_rate
        self.clip = int(round(clip_seconds * self.sample_rate))
        self.categories = list(categories) if categories is not None else bank.categories()
        self.sounds = bank.names(sound_split)
        self.prompt_split = prompt_split
        self.targets = [n for n in self.sounds if self._prompts(n)]
        if not self.targets:
            raise ValueError(f"no sound of split {sound_split!r} has another instance in {prompt_split!r}")
        skipped = len(self.sounds) - len(self.targets)
        if skipped:
            logger.info(
                "%d sounds of split %s have no other instance in %s to prompt with; not used as targets",
                skipped,
                sound_split,
                prompt_split,
            )
        self.targets_kind = targets
        self._los = pool.line_of_sight if pool.line_of_sight is not None else np.ones(pool.azimuth.shape, bool)
        self._los_poses = np.flatnonzero(self._los.any(axis=1))
        if targets == "line_of_sight" and self._los_poses.size == 0:
            raise ValueError("no pose of the RIR pool has a line-of-sight source to draw targets from")
        self._waves = {n: bank.waveform(n, self.sample_rate) for n in set(self.sounds)}
        for n in self.targets:
            for p in self._prompts(n):
                self._waves.setdefault(p, bank.waveform(p, self.sample_rate))

    def _draw_pair(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(pose, target source, distractor source); ``all`` keeps the draws the benchmark clips were made with."""
        if self.targets_kind == "all":
            pose = int(rng.integers(self.pool.num_poses))
            j_t, j_d = rng.choice(self.pool.sources_per_pose, size=2, replace=False)
            return pose, int(j_t), int(j_d)
        pose = int(self._los_poses[rng.integers(self._los_poses.size)])
        visible = np.flatnonzero(self._los[pose])
        j_t = int(visible[rng.integers(visible.size)])
        others = np.delete(np.arange(self.pool.sources_per_pose), j_t)
        return pose, j_t, int(others[rng.integers(others.size)])

    def _prompts(self, name: str) -> list[str]:
        cat, inst = self.bank.category(name), self.bank.instance(name)
        return [
            n
            for n in self.bank.names(self.prompt_split)
            if self.bank.category(n) == cat and self.bank.instance(n) != inst
        ]

    def _received(self, wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
        """(N,) dry sound and (L, 2) RIR -> (2, N + L - 1) received signal."""
        n = wave.size + rir.shape[0] - 1
        nfft = 1 << (n - 1).bit_length()
        spec = np.fft.rfft(wave, nfft)[None, :] * np.fft.rfft(rir.T, nfft)
        return np.fft.irfft(spec, nfft)[:, :n]

    def sample(
        self, batch_size: int, snr_db: float | tuple[float, float], rng: np.random.Generator
    ) -> DoaBatch:
        """``batch_size`` examples; ``snr_db`` a fixed value or a (low, high) range drawn per example."""
        out = {k: [] for k in DoaBatch.__dataclass_fields__}
        los = self.pool.line_of_sight
        for _ in range(batch_size):
            target = self.targets[int(rng.integers(len(self.targets)))]
            cat = self.bank.category(target)
            others = [n for n in self.sounds if self.bank.category(n) != cat]
            distractor = others[int(rng.integers(len(others)))]
            prompts = self._prompts(target)
            prompt = prompts[int(rng.integers(len(prompts)))]
            pose, j_t, j_d = self._draw_pair(rng)
            rx_t = self._received(self._waves[target], self.pool.rirs[pose, j_t])
            rx_d = self._received(self._waves[distractor], self.pool.rirs[pose, j_d])
            hop = self.clip // 8
            s_t = _loudest_window(rx_t, self.clip, hop)
            s_d = int(rng.integers(0, max(1, rx_d.shape[1] - self.clip)))
            mean_energy = np.sum(rx_d**2) * self.clip / rx_d.shape[1]
            if np.sum(rx_d[:, s_d : s_d + self.clip] ** 2) < 0.25 * mean_energy:  # a near-silent stretch
                s_d = _loudest_window(rx_d, self.clip, hop)
            seg_t = rx_t[:, s_t : s_t + self.clip]
            seg_d = rx_d[:, s_d : s_d + self.clip]
            snr = float(rng.uniform(*snr_db)) if isinstance(snr_db, tuple) else float(snr_db)
            e_t, e_d = np.sum(seg_t**2) + 1e-12, np.sum(seg_d**2) + 1e-12
            seg_d = seg_d * np.sqrt(e_t / e_d * 10 ** (-snr / 10))
            mix = seg_t + seg_d
            scale = 1.0 / (np.sqrt(np.mean(mix**2)) + 1e-9)
            p_wave = self._waves[prompt]
            s_p = _loudest_window(p_wave[None], self.clip, hop)
            p_seg = p_wave[s_p : s_p + self.clip]
            out["mixture"].append(mix * scale)
            out["target"].append(seg_t * scale)
            out["prompt"].append(p_seg / (np.sqrt(np.mean(p_seg**2)) + 1e-9))
            out["category"].append(self.categories.index(cat))
            out["azimuth"].append(self.pool.azimuth[pose, j_t])
            out["distractor_azimuth"].append(self.pool.azimuth[pose, j_d])
            out["line_of_sight"].append(True if los is None else bool(los[pose, j_t]))
        return DoaBatch(
            mixture=torch.from_numpy(np.stack(out["mixture"]).astype(np.float32)),
            target=torch.from_numpy(np.stack(out["target"]).astype(np.float32)),
            prompt=torch.from_numpy(np.stack(out["prompt"]).astype(np.float32)),
            category=torch.as_tensor(out["category"], dtype=torch.long),
            azimuth=torch.as_tensor(out["azimuth"], dtype=torch.float32),
            distractor_azimuth=torch.as_tensor(out["distractor_azimuth"], dtype=torch.float32),
            line_of_sight=torch.as_tensor(out["line_of_sight"], dtype=torch.bool),
        )
