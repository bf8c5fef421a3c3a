"""Registry of extra observations (beyond rgb / depth / spectrogram) by name.

A provider turns the environment state into an array. The reference env calls ``compute`` on one
:class:`ObservationState`; the batched env calls ``compute_batch`` on a :class:`BatchObservationState`
when the provider has one, else ``compute`` per environment. Listing the name in ``cfg.task.sensors``
(or the env's ``sensors`` argument) adds it to the observation dict. ``pointgoal`` (GPS+compass in
habitat's polar form) is built in. ``"doa"`` is reserved for the packaged DoA head that ``task.use_doa=true``
registers (:func:`register_packaged_doa`); a provider of your own takes another name.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from asgf_nav.config import ConfigError, check_registered_name
from asgf_nav.tasks.episodes import ResolvedEpisode
from asgf_nav.tasks.navigation import pointgoal_polar
from asgf_nav.tasks.world import TaskScene, TaskWorld

BUILTIN_SENSORS = ("rgb", "depth", "spectrogram")
# names only the packaged DoA head registers: the policies build their "doa" input from task.use_doa, so another
# provider under it would be computed and ignored (use_doa=false) or silently replaced by the head (true)
RESERVED_OBSERVATIONS = ("doa",)


@dataclass(frozen=True)
class ObservationState:
    """One environment's state after a reset or step."""

    world: TaskWorld
    scene: TaskScene
    episode: ResolvedEpisode
    node: int
    yaw: int
    step: int
    spectrogram: np.ndarray | None = None


@dataclass(frozen=True)
class BatchObservationState:
    """B environments' state as tensors on the env device (node indices are scene-local)."""

    world: TaskWorld
    episodes: list[ResolvedEpisode]
    node: torch.Tensor  # (B,) long
    yaw: torch.Tensor  # (B,) long
    step: torch.Tensor  # (B,) long
    position: torch.Tensor  # (B, 3) float32
    goal_position: torch.Tensor  # (B, 3) float32
    spectrogram: torch.Tensor | None = None
    # received(items) -> (len(items), 2, sr): the goal sound as envs ``items`` hear it, on the env device
    # (the batched env reuses what it rendered for the spectrograms); None: providers render it themselves
    received: Callable[[Sequence[int]], torch.Tensor] | None = None

    def single(self, i: int) -> ObservationState:
        ep = self.episodes[i]
        spec = None if self.spectrogram is None else self.spectrogram[i].cpu().numpy()
        return ObservationState(
            self.world, self.world.scene(ep.scene), ep, int(self.node[i]), int(self.yaw[i]), int(self.step[i]), spec
        )


@dataclass(frozen=True)
class ObservationProvider:
    name: str
    compute: Callable[[ObservationState], np.ndarray]
    space: Callable[[TaskWorld], gym.spaces.Box]
    compute_batch: Callable[[BatchObservationState], torch.Tensor] | None = None
    needs_spectrogram: bool = False  # the envs compute it for the provider even when it is not a sensor
    # check_sounds(names): raise (naming them) for sounds the provider cannot serve; an env calls it with its
    # episodes' sounds as it is built, so that a run stops before its first step rather than at it
    check_sounds: Callable[[Sequence[str]], None] | None = None


_REGISTRY: dict[str, ObservationProvider] = {}
# compute functions of the packaged DoA head: putting its provider back by name (a benchmark switching variants)
# is not another provider taking the reserved name
_PACKAGED: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def register_observation(
    name: str,
    compute: Callable[[ObservationState], np.ndarray],
    space: Callable[[TaskWorld], gym.spaces.Box],
    compute_batch: Callable[[BatchObservationState], torch.Tensor] | None = None,
    overwrite: bool = False,
    needs_spectrogram: bool = False,
    check_sounds: Callable[[Sequence[str]], None] | None = None,
) -> ObservationProvider:
    """Make ``name`` available as an observation; ``space(world)`` gives its per-env Box. With
    ``needs_spectrogram`` the state it is given holds the spectrogram; otherwise only when the env computes it
    anyway (a sensor, or another provider's input), else None. ``check_sounds(names)``, when given, is called
    as an env is built with its episodes' sounds, and raises for those the provider cannot serve."""
    check_registered_name("observation", name, "task.sensors")
    if name in BUILTIN_SENSORS:
        raise ValueError(f"observation name {name!r} is a built-in sensor")
    if name in RESERVED_OBSERVATIONS and not any(compute is f for f in _PACKAGED):  # by identity: any callable
        raise ValueError(
            f"observation name {name!r} is reserved for the packaged DoA head, which task.use_doa=true registers "
            f"(the policies read {name!r} only then); register your provider under another name, e.g. "
            f"'my_{name}', and list it in task.sensors and the policy's reads_sensors"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"observation {name!r} is already registered (pass overwrite=True to replace it)")
    provider = ObservationProvider(name, compute, space, compute_batch, needs_spectrogram, check_sounds)
    _REGISTRY[name] = provider
    return provider


def register_packaged_doa(
    name: str,
    compute: Callable[[ObservationState], np.ndarray],
    space: Callable[[TaskWorld], gym.spaces.Box],
    compute_batch: Callable[[BatchObservationState], torch.Tensor] | None = None,
    overwrite: bool = True,
    check_sounds: Callable[[Sequence[str]], None] | None = None,
) -> ObservationProvider:
    """:func:`register_observation` for the packaged DoA head
    (:func:`asgf_nav.models.doa.observation.register_doa_observation`), the one provider allowed a name in
    ``RESERVED_OBSERVATIONS``; not for plugins."""
    _PACKAGED.add(compute)
    return register_observation(name, compute, space, compute_batch, overwrite=overwrite, check_sounds=check_sounds)


@contextmanager
def restored_observations() -> Iterator[None]:
    """Providers registered inside (a run's DoA head) are dropped after it and replaced ones come back, so a
    second run in the same process (a notebook) finds the registry the first one found."""
    saved = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def get_observation(name: str) -> ObservationProvider:
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = (
            "; 'doa' is registered by task.use_doa=true (asgf_nav.experiment.register_auxiliary_observations)"
            if name == "doa"
            else "; a module of your own that registers it is named in model.plugins"
        )
        raise KeyError(
            f"unknown observation {name!r}; built-in sensors {list(BUILTIN_SENSORS)}, registered {sorted(_REGISTRY)}"
            + hint
        ) from None


def check_provided(name: str, value: Any, expected: tuple[int, ...]) -> Any:
    """``value`` as a provider returned it, checked to have its space's shape (with the batch in front for
    ``compute_batch``): a wrong one would reach the policy's layers, or fail there without naming the sensor."""
    shape = tuple(getattr(value, "shape", ()))
    if shape != tuple(expected):
        raise ValueError(
            f"observation {name!r}: its provider returned an array of shape {shape}, but its space declares "
            f"{tuple(expected)}"
        )
    return value


def check_sounds_served(sensors: Sequence[str], sounds: Sequence[str]) -> None:
    """Ask each registered provider among ``sensors`` whether it can serve these sounds (it raises if not)."""
    for name in sensors:
        if name not in BUILTIN_SENSORS and (check := get_observation(name).check_sounds) is not None:
            check(sounds)


def spectrogram_needed(sensors: Sequence[str]) -> bool:
    """Whether an env with these sensors computes the spectrogram: a sensor itself, or a provider's input."""
    return any(
        name == "spectrogram" or (name not in BUILTIN_SENSORS and get_observation(name).needs_spectrogram)
        for name in sensors
    )


def registered_observations() -> list[str]:
    return sorted(_REGISTRY)


def check_sensors(sensors: list[str]) -> list[str]:
    """Validate the sensor names of ``task.sensors`` early: an unknown name or a repeated one is a ConfigError
    that lists the valid names."""
    for name in sensors:
        if name not in BUILTIN_SENSORS:
            try:
                get_observation(name)
            except KeyError as exc:
                raise ConfigError(f"task.sensors: {exc.args[0]}") from None
    if len(set(sensors)) != len(sensors):
        raise ConfigError(f"task.sensors: {sensors} names a sensor twice")
    return list(sensors)


# ------------------------------------------------------------------------------------------ pointgoal
def _pointgoal(state: ObservationState) -> np.ndarray:
    goal = state.scene.positions[state.episode.goal_node]
    return pointgoal_polar(state.scene.positions[state.node], state.yaw, goal)


def _pointgoal_batch(state: BatchObservationState) -> torch.Tensor:
    delta = (state.goal_position - state.position).double()
    theta = state.yaw.double() * (math.pi / 2.0)
    ax = delta[:, 0] * torch.cos(theta) - delta[:, 2] * torch.sin(theta)
    az = delta[:, 0] * torch.sin(theta) + delta[:, 2] * torch.cos(theta)
    rho = torch.hypot(ax, az)
    phi = torch.atan2(ax, -az)
    return torch.stack([rho, -phi], dim=1).float()


def _pointgoal_space(world: TaskWorld) -> gym.spaces.Box:
    return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(2,), dtype=np.float32)


register_observation("pointgoal", _pointgoal, _pointgoal_space, _pointgoal_batch)
