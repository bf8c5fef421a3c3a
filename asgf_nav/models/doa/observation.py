"""A frozen, pretrained selective DoA head as an auxiliary ``doa`` observation for navigation policies.

:class:`DoaObservation` wraps a checkpoint: ``compute(binaural, prompts)`` maps a batch of binaural
waveforms to the (B, K) posterior over azimuth bins (bin k centred on ``k * bin_width`` degrees,
counter-clockwise from the agent's heading). The head's parameters never require gradients and it
always runs in eval mode under ``torch.no_grad``, so a policy's optimizer cannot change it.

:func:`register_doa_observation` adds it to the task's observation registry: the env renders the goal
sound through the binaural RIR of the agent's node and yaw (one second, as the spectrogram sensor does)
and prompts the head with a fixed other instance of the episode sound's category. The posterior depends
only on (scene, node, goal, yaw, sound), and agents revisit those states all the time, so the provider
keeps the most recent ``cache_size`` of them (an LRU of 288-byte rows, about 40 MB with keys at the
default 65,536) and runs the head only on misses. Each world (the scenes of one split) has a cache of its
own, so a validation never evicts the training states: a training state computed again would come out of
another batch, different in its last float bits, and training would no longer be the same with and
without validation.
"""

from __future__ import annotations

import logging
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import torch

from asgf_nav.acoustics.resample import PolyphaseResampler
from asgf_nav.io import file_identity
from asgf_nav.models.doa.checkpoint import load_model
from asgf_nav.models.doa.data import prompt_clips
from asgf_nav.models.doa.network import SelectiveDoaNet

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "selective_doa.pt"


def head_identity(checkpoint: str | Path = "") -> dict[str, str]:
    """Path and content digest of the DoA head a run observes through (``""``: the packaged weights): a
    checkpoint records it, since the file at that path can change under a run (pretraining continued there,
    a new release of the packaged head)."""
    return file_identity(Path(checkpoint or DEFAULT_WEIGHTS))


class DoaObservation:
    """Frozen selective DoA head: binaural waveforms (+ prompt) -> posterior over azimuth bins."""

    def __init__(
        self,
        checkpoint: str | Path = DEFAULT_WEIGHTS,
        device: str | torch.device = "cpu",
        window_seconds: float = 0.5,
    ) -> None:
        model = load_model(checkpoint, map_location=device)
        if not isinstance(model, SelectiveDoaNet):
            raise ValueError(f"DoA checkpoint {checkpoint} holds a {type(model).__name__}, not a selective head")
        self.device = torch.device(device)
        self.model = model.to(self.device)  # load_model builds it on the CPU whatever the map_location
        self.sample_rate = model.cfg.stft.sample_rate
        self.window = int(window_seconds * self.sample_rate)
        self._prompts: dict[str, torch.Tensor | None] = {}
        self._bank = None
        self._resamplers: dict[int, PolyphaseResampler] = {}
        self.caches: dict[int, tuple[weakref.ref, PosteriorCache]] = {}  # by id(world): register_doa_observation

    @property
    def cache(self) -> PosteriorCache:
        """The posterior cache, where the head has served one world (a single env, as in tests and benchmarks)."""
        caches = [cache for world, cache in self.caches.values() if world() is not None]
        if len(caches) != 1:
            raise ValueError(f"the DoA head serves {len(caches)} worlds, each with its own cache: see .caches")
        return caches[0]

    @property
    def num_bins(self) -> int:
        return self.model.cfg.grid.num_bins

    # ------------------------------------------------------------------------------------------ prompts
    def prompt_sound(self, sound: str) -> str | None:
        """The reference clip that prompts the head for ``sound``: a fixed other instance of its category from
        the training split. A held-out sound whose category has none there may take a held-out clip (that is
        evaluation); a training sound never does, so no held-out audio reaches training: None when it has none.
        """
        from asgf_nav.sounds.bank import SoundBank

        self._bank = self._bank or SoundBank.load()
        rng = np.random.default_rng(zlib.crc32(sound.encode()))
        other = self._bank.other_instance(sound, rng, among="train")
        if other is None and sound not in self._bank.names("train"):
            other = self._bank.other_instance(sound, rng)
        if other is None and sound not in self._bank.names("train"):
            raise ValueError(f"sound {sound!r}: its category has no other instance to prompt the DoA head")
        return other

    def check_sounds(self, sounds: Sequence[str]) -> None:
        """Raise ConfigError naming the sounds the head cannot be prompted for: it takes its prompts from the
        packaged sound bank, whose names SoundSpaces' unheard sounds do not share."""
        from asgf_nav.config import ConfigError

        unserved = []
        for sound in sounds:
            try:
                self.prompt_for(sound)
            except ValueError as exc:  # SoundBankError too
                unserved.append(f"{sound!r} ({exc})")
        if unserved:
            raise ConfigError(
                f"task.use_doa: the DoA head cannot be prompted for {len(unserved)} of the episodes' {len(sounds)} "
                f"sounds: {'; '.join(unserved[:3])}{'; ...' if len(unserved) > 3 else ''}. Its prompts are clips of "
                "the packaged sound bank, which SoundSpaces' unheard sounds are not part of; set task.use_doa=false, "
                "or play sounds of the bank (the embedded scenes, or task.sound_split=heard)"
            )

    def prompt_for(self, sound: str) -> torch.Tensor | None:
        """The prompt of sound ``sound``: its reference clip's loudest window (the category index for
        category-prompted heads); None for a training sound without one, whose posterior is then uniform."""
        if sound not in self._prompts:
            if self.model.cfg.prompt == "category":
                from asgf_nav.sounds.bank import SoundBank

                self._bank = self._bank or SoundBank.load()
                cats = self.model.cfg.categories
                category = self._bank.category(sound)
                if category not in cats:
                    raise ValueError(f"sound {sound!r} has category {category!r}, unknown to the DoA head")
                self._prompts[sound] = torch.tensor(cats.index(category))
            elif (other := self.prompt_sound(sound)) is None:
                logger.info("DoA head: training sound %r has no other instance in the training split; no prompt, "
                            "its doa observation is the uniform posterior", sound)  # fmt: skip
                self._prompts[sound] = None
            else:
                wave = torch.from_numpy(self._bank.waveform(other, self.sample_rate)).double()
                padded = torch.nn.functional.pad(wave, (0, max(0, self.window - len(wave))))[None]
                clip = prompt_clips(padded, torch.tensor([len(wave)]), self.window)[0]
                self._prompts[sound] = clip.float()
        return self._prompts[sound]

    # ------------------------------------------------------------------------------------------ compute
    @torch.no_grad()
    def compute(
        self,
        binaural: np.ndarray | torch.Tensor,
        prompts: list[str] | torch.Tensor,
        sample_rate: int | None = None,
    ) -> torch.Tensor:
        """(B, 2, N) binaural waveforms (channel 0 left) at ``sample_rate`` (default: the head's) and the
        prompts (sound names, or a tensor of reference clips / category indices) -> (B, K) posterior.

        The signal is cut into windows of the training clip length, each normalised to unit RMS, and the
        posteriors of the windows that carry sound are averaged.
        """
        audio = torch.as_tensor(binaural).to(self.device, torch.float32)
        if audio.ndim != 3 or audio.shape[1] != 2:
            raise ValueError(f"binaural batch must be (B, 2, N), got {tuple(audio.shape)}")
        audio = self._resampler(sample_rate or self.sample_rate)(audio)
        unprompted = torch.zeros(audio.shape[0], dtype=torch.bool, device=self.device)
        if isinstance(prompts, torch.Tensor):
            prompt = prompts
        else:
            if len(prompts) != audio.shape[0]:
                raise ValueError(f"{len(prompts)} prompts for a batch of {audio.shape[0]}")
            found = [self.prompt_for(name) for name in prompts]
            unprompted = torch.tensor([p is None for p in found], device=self.device)
            blank = torch.zeros(self.window)  # stands in for a missing prompt; that row's posterior is replaced
            prompt = torch.stack([blank if p is None else p for p in found])
        prompt = prompt.to(self.device)
        self.model.eval()
        n = audio.shape[-1]
        if n < self.window:
            audio = torch.nn.functional.pad(audio, (0, self.window - n))
        total = torch.zeros(audio.shape[0], self.num_bins, device=self.device)
        weight = torch.zeros(audio.shape[0], 1, device=self.device)
        for s in range(0, max(1, n - self.window + 1), self.window):
            piece = audio[..., s : s + self.window]
            rms = piece.square().mean(dim=(1, 2)).sqrt()
            active = (rms > 1e-6).float()[:, None]
            post = self.model(piece / (rms[:, None, None] + 1e-9), prompt)["posterior"]
            total += active * post
            weight += active
        uniform = torch.full_like(total, 1.0 / self.num_bins)
        heard = (weight > 0) & ~unprompted[:, None]
        return torch.where(heard, total / weight.clamp_min(1), uniform).cpu()

    def _resampler(self, source_rate: int) -> PolyphaseResampler:
        if source_rate not in self._resamplers:
            self._resamplers[source_rate] = PolyphaseResampler(source_rate, self.sample_rate)
        return self._resamplers[source_rate]

    def to(self, device: str | torch.device) -> DoaObservation:
        """Run the head on ``device`` (the provider follows the env's device)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self


class PosteriorCache:
    """LRU map from a hashable state key to a posterior row; ``fill`` computes the missing rows in one batch."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"DoA cache size must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.rows: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, keys: list[Hashable], fill: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """Rows for ``keys``; ``fill(indices)`` returns the (len(indices), K) rows of the uncached ``keys[i]``.

        ``misses`` counts the rows computed (a key repeated within one call is computed once).
        """
        found: dict[Hashable, np.ndarray] = {}
        pending: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            if key in found or key in pending:
                continue
            row = self.rows.get(key)
            if row is None:
                pending[key] = i
            else:
                self.rows.move_to_end(key)
                found[key] = row
        self.hits += len(keys) - len(pending)
        self.misses += len(pending)
        if pending:
            rows = np.asarray(fill(list(pending.values())), dtype=np.float32)
            for key, row in zip(pending, rows):
                found[key] = row
                self._put(key, row)
        return np.stack([found[key] for key in keys])

    def _put(self, key: Hashable, row: np.ndarray) -> None:
        if self.capacity == 0:
            return
        self.rows[key] = row.copy()  # a view would keep its whole miss batch alive after the others are evicted
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)


def register_doa_observation(
    checkpoint: str | Path = DEFAULT_WEIGHTS, name: str = "doa", overwrite: bool = True, cache_size: int = 65536
) -> DoaObservation:
    """Register ``name`` in the task's observation registry, backed by a frozen head from ``checkpoint``. The
    default ``"doa"`` is reserved for this head (plugins may not register it); calling this again replaces the
    previous head unless ``overwrite=False``.

    ``cache_size`` posteriors are kept (LRU, keyed by scene, node, goal, yaw and sound; 0 disables it).
    """
    import gymnasium as gym

    from asgf_nav.tasks.observations import register_packaged_doa
    from asgf_nav.tasks.spectrogram import TorchSpectrogram
    from asgf_nav.tasks.world import binaural_rirs

    head = DoaObservation(checkpoint)

    def cache_of(world) -> PosteriorCache:
        """The cache of ``world``: one per world (a split's scenes), dropped with the world."""
        key = id(world)
        entry = head.caches.get(key)
        if entry is None or entry[0]() is not world:
            forget = weakref.ref(world, lambda _, key=key: head.caches.pop(key, None))
            entry = head.caches[key] = (forget, PosteriorCache(cache_size))
        return entry[1]

    renderers: dict[tuple[int, torch.device], TorchSpectrogram] = {}

    def received(world, scenes: list, nodes: list[int], yaws: list[int], episodes: list, device) -> torch.Tensor:
        """(B, 2, sr): each episode's goal sound through the RIR of the agent's node and yaw, on ``device``."""
        key = (world.sample_rate, torch.device(device))
        if key not in renderers:
            renderers[key] = TorchSpectrogram(world.sample_rate, device)
        rirs = binaural_rirs((sc, n, ep.goal_node, y) for sc, n, y, ep in zip(scenes, nodes, yaws, episodes))
        sounds = torch.from_numpy(np.stack([world.sound(ep.sound) for ep in episodes]))
        return renderers[key].audio_from_rirs(sounds, rirs)

    def posteriors(
        world, scenes: list, nodes: list[int], yaws: list[int], episodes: list, device, heard=None
    ) -> np.ndarray:
        """``heard(indices)``: the received audio of those items when the env has it (else rendered here)."""
        keys = [(sc.name, n, ep.goal_node, y, ep.sound) for sc, n, y, ep in zip(scenes, nodes, yaws, episodes)]

        def fill(indices: list[int]) -> np.ndarray:
            if head.device != torch.device(device):
                head.to(device)  # follow the env: on a GPU the head and the convolutions run there
            missed = [[items[i] for i in indices] for items in (scenes, nodes, yaws, episodes)]
            audio = heard(indices) if heard is not None else received(world, *missed, device)
            sounds = [ep.sound for ep in missed[3]]
            return head.compute(audio, sounds, world.sample_rate).numpy()

        return cache_of(world).get(keys, fill)

    def compute(state) -> np.ndarray:
        return posteriors(state.world, [state.scene], [state.node], [state.yaw], [state.episode], "cpu")[0]

    def compute_batch(state) -> torch.Tensor:
        scenes = [state.world.scene(ep.scene) for ep in state.episodes]
        rows = posteriors(
            state.world, scenes, state.node.tolist(), state.yaw.tolist(), state.episodes, state.node.device,
            state.received,
        )  # fmt: skip
        return torch.from_numpy(rows).to(state.node.device)

    def space(world) -> gym.spaces.Box:
        return gym.spaces.Box(low=0.0, high=1.0, shape=(head.num_bins,), dtype=np.float32)

    # the reserved "doa" too
    register_packaged_doa(name, compute, space, compute_batch, overwrite=overwrite, check_sounds=head.check_sounds)
    logger.info(
        "registered observation %r from DoA head %s (%d bins, cache of %d)", name, checkpoint, head.num_bins, cache_size
    )
    return head
