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

from asgf_nav.models.doa.augment import (
    apply_spectral_gains,
    change_speed,
    random_timbre,
    resampled_length,
    spectral_gains,
)
from asgf_nav.models.doa.config import DISTRACTOR_WINDOWS, TARGET_KINDS
from asgf_nav.models.doa.rooms import RirPool
from asgf_nav.sounds.bank import SoundBank

logger = logging.getLogger(__name__)


@dataclass
class DoaBatch:
    mixture: torch.Tensor  # (B, 2, N) binaural mixture, unit RMS
    target: torch.Tensor  # (B, 2, N) the target's binaural signal on the same scale (the mask's target)
    prompt: torch.Tensor  # (B, N) dry reference clip of another instance of the target's category
    category: torch.Tensor  # (B,) long index into the sampler's category list
    azimuth: torch.Tensor  # (B,) degrees, the target's direct path
    distractor_azimuth: torch.Tensor  # (B,) degrees
    line_of_sight: torch.Tensor  # (B,) bool: the target's direct path reaches the listener

    def __len__(self) -> int:
        return int(self.azimuth.shape[0])

    def to(self, device: str | torch.device) -> DoaBatch:
        return DoaBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def slice(self, start: int, stop: int) -> DoaBatch:
        return DoaBatch(*(getattr(self, f)[start:stop] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(batches: list[DoaBatch]) -> DoaBatch:
        fields = DoaBatch.__dataclass_fields__
        return DoaBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in fields))


@dataclass(frozen=True)
class _Draw:
    """One example's random choices, all drawn before any audio is rendered."""

    target: str
    distractor: str
    prompt: str
    pose: int
    target_source: int
    distractor_source: int
    distractor_start: int  # where the distractor's clip starts, unless that stretch is near-silent
    snr_db: float
    timbres: np.ndarray | None = None  # (3, TIMBRE_SIZE) of target, distractor, prompt (augment.py); None = as recorded


def loudest_window(signal: torch.Tensor, lengths: torch.Tensor, length: int, hop: int) -> torch.Tensor:
    """(B,) start of the ``length``-sample window with the most energy, on a grid of ``hop`` samples.

    ``signal`` (B, C, M) is zero-padded after each row's ``lengths`` (B,); windows end inside a row's own
    length, and a row shorter than ``length`` gets start 0. Ties go to the earliest start. Energies are
    differences of a running sum, so they are taken in float64 whatever the signal's precision.
    """
    b, _, m = signal.shape
    energy = torch.nn.functional.pad(signal.double().pow(2).sum(dim=1).cumsum(dim=1), (1, 0))  # (B, M + 1)
    starts = torch.arange(0, max(1, m - length + 1), hop, device=signal.device)
    ends = torch.minimum(starts[None, :] + length, lengths[:, None])
    window = energy.gather(1, ends) - energy.gather(1, starts.expand(b, -1))
    too_late = starts[None, :] > (lengths[:, None] - length).clamp_min(0)
    return starts[window.masked_fill(too_late, -torch.inf).argmax(dim=1)]


def _windows(signal: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(B, C, M) signals and (B,) starts -> (B, C, length) clips."""
    index = starts[:, None] + torch.arange(length, device=signal.device)[None, :]
    return signal.gather(2, index[:, None, :].expand(-1, signal.shape[1], -1))


def prompt_clips(dry: torch.Tensor, lengths: torch.Tensor, clip: int) -> torch.Tensor:
    """(B, M) dry reference recordings, zero-padded after their (B,) ``lengths`` (M >= ``clip``) -> (B, clip)
    prompts: each recording's loudest stretch on a grid of clip // 8 samples, at unit RMS. Training and the
    navigation observation (``observation.py``) take their prompts here, so the two cannot drift apart."""
    rows = dry[:, None, :]
    clips = _windows(rows, loudest_window(rows, lengths, clip, clip // 8), clip)[:, 0]
    return clips / (clips.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-9)


# prompts are always recordings of the training split, so that no held-out recording is ever heard, as prompt
# or otherwise, before it is tested; an unheard target is prompted by a training instance of its category
PROMPT_SPLIT = "train"


class DoaExampleSampler:
    """Draws :class:`DoaBatch` es from one RIR pool and one sound split, on the fly.

    Each example's random choices are drawn first (:class:`_Draw`, in a fixed order, so a seed gives the
    same examples on every device); the audio is then rendered for the whole batch at once with torch FFT
    convolution on ``device``. On a CPU the arithmetic is float64 by default (the benchmark's clips), on
    other devices float32 (``dtype`` overrides either).
    """

    def __init__(
        self,
        bank: SoundBank,
        pool: RirPool,
        sound_split: str,
        clip_seconds: float = 0.5,
        categories: list[str] | None = None,
        targets: str = "all",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        distractor_window: str = "drawn",
        augment: bool = False,
        mask_pool: RirPool | None = None,
        generated: frozenset[str] = frozenset(),
        generated_share: float = 0.5,
    ) -> None:
        """``targets="line_of_sight"`` draws targets only among sources the direct path reaches: behind a
        wall the direct-path label cannot be heard, and training on it is label noise.

        The target clip is its sound's loudest stretch. ``distractor_window="drawn"`` (the benchmark's
        clips) takes the distractor at a drawn start, its loudest stretch only where that is
        near-silent; ``"loudest"`` always takes its loudest stretch. With ``drawn`` the target is the
        steadier of the two more often, a cue an audio-only method can learn (measured in docs/doa-benchmark.md);
        ``loudest`` removes it and keeps every other draw the same.

        ``augment`` changes the playback rate and spectral envelope of the target, the distractor and the
        prompt independently per example (:mod:`asgf_nav.models.doa.augment`), for training only.

        ``mask_pool`` (the same poses and sources as ``pool``, each response another part of it, such as its
        direct path alone) renders the batch's ``target`` through its responses instead: the part of the
        received target a mask learns to reconstruct. Every draw and the mixture stay the same.

        ``generated`` names the split's generated sounds (:class:`asgf_nav.sounds.families.GeneratedBank`):
        the target is one of them with probability ``generated_share`` and the distractor likewise, drawn
        independently, so however many there are the bank's own sounds keep their share. Without them the
        draws are those of the benchmark's clips."""
        if targets not in TARGET_KINDS:
            raise ValueError(f"targets must be one of {TARGET_KINDS}, got {targets!r}")
        if distractor_window not in DISTRACTOR_WINDOWS:
            raise ValueError(f"distractor_window must be one of {DISTRACTOR_WINDOWS}, got {distractor_window!r}")
        self.distractor_window = distractor_window
        self.augment = augment
        self.bank = bank
        self.pool = pool
        self.sample_rate = pool.sample_rate
        if not 0 < clip_seconds <= 1.0:
            raise ValueError(f"clip_seconds {clip_seconds} is outside (0, 1], the length of the bank's sounds")
        self.clip = int(round(clip_seconds * self.sample_rate))
        self.categories = list(categories) if categories is not None else bank.categories()
        self.sounds = bank.names(sound_split)
        same_category: dict[str, list[str]] = {}
        for n in bank.names(PROMPT_SPLIT):
            same_category.setdefault(bank.category(n), []).append(n)
        # each sound's possible prompts: other instances of its category in the prompt split
        self._prompt_names = {
            n: [p for p in same_category.get(bank.category(n), []) if bank.instance(p) != bank.instance(n)]
            for n in self.sounds
        }
        self.targets = [n for n in self.sounds if self._prompt_names[n]]
        self.generated = frozenset(generated)
        if self.generated - set(self.sounds):
            outside = sorted(self.generated - set(self.sounds))[:3]
            raise ValueError(f"generated sounds {outside} are not in split {sound_split!r}")
        if self.generated and not 0 <= generated_share <= 1:
            raise ValueError(f"generated_share must be in [0, 1], got {generated_share}")
        self.generated_share = generated_share
        # the names each draw chooses among, split by kind where there are generated sounds
        self._target_kinds = self._by_kind(self.targets)
        self._distractor_kinds = {
            c: self._by_kind([n for n in self.sounds if bank.category(n) != c])
            for c in {bank.category(n) for n in self.targets}
        }
        if not self.targets:
            raise ValueError(f"no sound of split {sound_split!r} has another instance in {PROMPT_SPLIT!r}")
        skipped = len(self.sounds) - len(self.targets)
        if skipped:
            logger.info(
                "%d sounds of split %s have no other instance in %s to prompt with; not used as targets",
                skipped,
                sound_split,
                PROMPT_SPLIT,
            )
        self.targets_kind = targets
        self._los = pool.line_of_sight if pool.line_of_sight is not None else np.ones(pool.azimuth.shape, bool)
        self._los_poses = np.flatnonzero(self._los.any(axis=1))
        if targets == "line_of_sight" and self._los_poses.size == 0:
            raise ValueError("no pose of the RIR pool has a line-of-sight source to draw targets from")
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float64 if self.device.type == "cpu" else torch.float32)
        names = sorted(set(self.sounds) | {p for n in self.targets for p in self._prompt_names[n]})
        waves = [bank.waveform(n, self.sample_rate) for n in names]
        self._wave_row = {n: i for i, n in enumerate(names)}
        self._wave_size = np.array([w.size for w in waves])  # on the host: draws read it per example
        self._wave_length = torch.as_tensor(self._wave_size, device=self.device)
        table = np.zeros((len(waves), max(w.size for w in waves)), dtype=np.float64)
        for i, w in enumerate(waves):
            table[i, : w.size] = w
        self._waves = torch.from_numpy(table).to(self.device, self.dtype)  # (sounds, longest), zero-padded
        self._rirs = torch.from_numpy(pool.rirs).to(self.device)  # (P, J, L, 2), converted per batch
        self._mask_rirs = None
        if mask_pool is not None:
            if mask_pool.rirs.shape != pool.rirs.shape or not np.allclose(mask_pool.azimuth, pool.azimuth):
                raise ValueError(
                    f"mask_pool (responses {mask_pool.rirs.shape}) does not hold the poses and sources of the "
                    f"sampler's pool (responses {pool.rirs.shape})"
                )
            self._mask_rirs = torch.from_numpy(mask_pool.rirs).to(self.device)

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

    def _by_kind(self, names: list[str]) -> tuple[list[str], ...]:
        """``(names,)``, or with generated sounds ``(the bank's, the generated)``, each in ``names``' order."""
        if not self.generated:
            return (names,)
        return [n for n in names if n not in self.generated], [n for n in names if n in self.generated]

    def _pick(self, kinds: tuple[list[str], ...], rng: np.random.Generator) -> str:
        """One name of :meth:`_by_kind`'s lists; with generated sounds first a draw of which kind (the other
        where that kind has none), then one of that kind."""
        names = kinds[0]
        if len(kinds) == 2:
            bank_sounds, generated = kinds
            names = generated if rng.random() < self.generated_share else bank_sounds
            names = names or bank_sounds or generated
        return names[int(rng.integers(len(names)))]

    def _draw(self, snr_db: float | tuple[float, float], rng: np.random.Generator) -> _Draw:
        target = self._pick(self._target_kinds, rng)
        distractor = self._pick(self._distractor_kinds[self.bank.category(target)], rng)
        prompts = self._prompt_names[target]
        prompt = prompts[int(rng.integers(len(prompts)))]
        pose, j_t, j_d = self._draw_pair(rng)
        size = int(self._wave_size[self._wave_row[distractor]])
        timbres = np.stack([random_timbre(rng) for _ in range(3)]) if self.augment else None
        if timbres is not None:
            size = resampled_length(size, float(timbres[1, 0]))
        received = size + self.pool.rirs.shape[2] - 1
        start = int(rng.integers(0, max(1, received - self.clip)))
        snr = float(rng.uniform(*snr_db)) if isinstance(snr_db, tuple) else float(snr_db)
        return _Draw(target, distractor, prompt, pose, j_t, j_d, start, snr, timbres)

    def _received(
        self,
        names: list[str],
        poses: np.ndarray,
        sources: np.ndarray,
        timbre: torch.Tensor | None = None,
        responses: torch.Tensor | None = None,
    ):
        """Dry sounds (in ``timbre`` (B, TIMBRE_SIZE) where given) through the RIRs of (pose, source), from
        ``responses`` (P, J, L, 2) or the pool's: (B, 2, M) zero-padded signals and (B,) lengths."""
        rows = torch.as_tensor([self._wave_row[n] for n in names], device=self.device)
        waves, lengths = self._waves[rows], self._wave_length[rows]
        if timbre is not None:
            waves, lengths = change_speed(waves, lengths, timbre[:, 0])
        index = torch.as_tensor(poses, device=self.device), torch.as_tensor(sources, device=self.device)
        rirs = (self._rirs if responses is None else responses)[index].to(self.dtype)
        received = lengths + rirs.shape[1] - 1
        m = int(received.max())
        nfft = 1 << (m - 1).bit_length()
        spec = torch.fft.rfft(waves, nfft)[:, None, :] * torch.fft.rfft(rirs.transpose(1, 2), nfft)
        if timbre is not None:
            freqs = torch.fft.rfftfreq(nfft, 1.0 / self.sample_rate).to(self.device, torch.float64)
            spec = spec * spectral_gains(timbre.to(torch.float64), freqs).to(spec.real.dtype)[:, None, :]
        return torch.fft.irfft(spec, nfft)[..., :m], received

    def sample(self, batch_size: int, snr_db: float | tuple[float, float], rng: np.random.Generator) -> DoaBatch:
        """``batch_size`` examples; ``snr_db`` a fixed value or a (low, high) range drawn per example."""
        draws = [self._draw(snr_db, rng) for _ in range(batch_size)]
        clip, hop = self.clip, self.clip // 8
        poses = np.array([d.pose for d in draws])
        j_t, j_d = np.array([d.target_source for d in draws]), np.array([d.distractor_source for d in draws])
        timbres = None
        if self.augment:
            timbres = torch.as_tensor(np.stack([d.timbres for d in draws]), device=self.device)  # (B, 3, T)
        t_timbre, d_timbre = (None, None) if timbres is None else (timbres[:, 0], timbres[:, 1])
        names = [d.target for d in draws]
        rx_t, len_t = self._received(names, poses, j_t, t_timbre)
        rx_d, len_d = self._received([d.distractor for d in draws], poses, j_d, d_timbre)
        # the target's loudest stretch; the distractor's drawn one, or its loudest where that is near-silent
        start_t = loudest_window(rx_t, len_t, clip, hop)
        seg_t = _windows(rx_t, start_t, clip)
        part_t = seg_t  # what the mask learns to reconstruct: the target, or the part mask_pool renders
        if self._mask_rirs is not None:
            part_t = _windows(self._received(names, poses, j_t, t_timbre, self._mask_rirs)[0], start_t, clip)
        s_d = torch.as_tensor([d.distractor_start for d in draws], device=self.device)
        mean_energy = rx_d.pow(2).sum(dim=(1, 2)) * clip / len_d
        quiet = _windows(rx_d, s_d, clip).pow(2).sum(dim=(1, 2)) < 0.25 * mean_energy
        if self.distractor_window == "loudest":
            quiet = torch.ones_like(quiet)
        seg_d = _windows(rx_d, torch.where(quiet, loudest_window(rx_d, len_d, clip, hop), s_d), clip)
        # mix at the drawn SNR (energies of the two clips), then scale the mixture to unit RMS
        snr = torch.as_tensor([d.snr_db for d in draws], device=self.device, dtype=self.dtype)
        e_t, e_d = seg_t.pow(2).sum(dim=(1, 2)) + 1e-12, seg_d.pow(2).sum(dim=(1, 2)) + 1e-12
        mix = seg_t + seg_d * torch.sqrt(e_t / e_d * 10 ** (-snr / 10))[:, None, None]
        scale = (1.0 / (mix.pow(2).mean(dim=(1, 2)).sqrt() + 1e-9))[:, None, None]
        # the prompt: the loudest stretch of the dry reference clip, unit RMS
        rows = torch.as_tensor([self._wave_row[d.prompt] for d in draws], device=self.device)
        dry, dry_length = self._waves[rows], self._wave_length[rows]
        if timbres is not None:
            dry, dry_length = change_speed(dry, dry_length, timbres[:, 2, 0])
            dry = apply_spectral_gains(dry, timbres[:, 2], self.sample_rate)
        prompt = prompt_clips(dry, dry_length, clip)
        categories = [self.categories.index(self.bank.category(d.target)) for d in draws]
        return DoaBatch(
            mixture=(mix * scale).float(),
            target=(part_t * scale).float(),
            prompt=prompt.float(),
            category=torch.as_tensor(categories, dtype=torch.long),
            azimuth=torch.as_tensor(self.pool.azimuth[poses, j_t], dtype=torch.float32),
            distractor_azimuth=torch.as_tensor(self.pool.azimuth[poses, j_d], dtype=torch.float32),
            line_of_sight=torch.as_tensor(self._los[poses, j_t], dtype=torch.bool),
        ).to(self.device)
