"""t-SNE of the audio spatial state e_t (the paper's Fig. 4): collected from rollouts, coloured by geometry.

Every step of a policy with an ASE module leaves its state in ``policy.last_ase_state``; the collector
records it with the agent's geodesic distance to the target and the target's azimuth relative to the
agent's heading (degrees, counter-clockwise = left, as habitat's compass).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgf_nav.eval.evaluator import Agent, AgentContext, PolicyAgent, run_episodes
from asgf_nav.io import atomic_savefig, atomic_savez, load_npz
from asgf_nav.models.policies import POLICY_REGISTRY
from asgf_nav.tasks.navigation import pointgoal_polar
from asgf_nav.tasks.world import TaskWorld

logger = logging.getLogger(__name__)


class TsneInputError(ValueError):
    """States that cannot be embedded (too few, identical, not finite): the user can fix it with more episodes or
    a trained checkpoint, so the script says so in one line."""


@dataclass
class SpatialStates:
    states: np.ndarray  # (N, D) float32
    distance: np.ndarray  # (N,) geodesic metres to the target
    azimuth: np.ndarray  # (N,) degrees in [-180, 180], left positive (straight behind reads as either end)

    def save(self, path: str | Path) -> Path:
        return atomic_savez(path, compressed=True, states=self.states, distance=self.distance, azimuth=self.azimuth)

    @classmethod
    def load(cls, path: str | Path) -> SpatialStates:
        try:
            data = load_npz(path, ("states", "distance", "azimuth"))
        except ValueError as exc:
            raise ValueError(f"cannot read spatial states {path}: {exc}") from exc
        return cls(data["states"], data["distance"], data["azimuth"])


class _Collected(Exception):
    """Raised inside the rollout once enough states are collected."""


class _StateCollector(Agent):
    """Wraps a policy agent and records (e_t, distance, azimuth) after every action choice of a recorded
    episode (envs past their share of the episodes run discarded ones: ``ctx.active`` is False there)."""

    def __init__(self, inner: PolicyAgent, samples: int) -> None:
        self.inner = inner
        self.name = f"{inner.name} (ASE states)"
        self.sensors = inner.sensors
        self.samples = samples
        self.states: list[np.ndarray] = []
        self.distance: list[float] = []
        self.azimuth: list[float] = []

    def reset(self, num_envs: int) -> None:
        self.inner.reset(num_envs)

    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        actions = self.inner.act(obs, ctx)
        state = self.inner.last_ase_state
        if state is None:
            raise ValueError(self._no_state_message())
        state = state.float().cpu().numpy()
        for i, (scene, ep) in enumerate(zip(ctx.scenes, ctx.episodes)):
            if not ctx.active[i]:
                continue
            node, goal = int(ctx.nodes[i]), ep.goal_node
            _, phi = pointgoal_polar(
                np.asarray(scene.positions[node]), int(ctx.yaws[i]), np.asarray(scene.positions[goal])
            )
            self.states.append(state[i])
            self.distance.append(float(scene.geodesic_hops[node, goal]) * scene.grid_size)
            self.azimuth.append(math.degrees(float(phi)))
            if len(self.states) >= self.samples:
                raise _Collected
        return actions

    def _no_state_message(self) -> str:
        """Why a step left no ASE state: a policy declaring one that does not set it (a plugin's bug), or a
        policy without an ASE module."""
        policy = getattr(self.inner, "policy", None)
        name = getattr(policy, "policy_name", None) or self.inner.name
        if getattr(policy, "has_spatial_state", False):
            return (
                f"policy {name!r} sets has_spatial_state=True but left last_ase_state None after its step: its "
                "forward must set self.last_ase_state to that step's ASE state e_t, (N, D) (docs/models.md)"
            )
        return (
            f"policy {name!r} has no ASE module (last_ase_state is None); use a policy with one: "
            f"{' or '.join(spatial_state_policies())}"
        )


def spatial_state_policies() -> list[str]:
    """The registered policies with an ASE state to embed (``has_spatial_state``), plugins' ones included once
    their modules are imported."""
    return sorted(name for name, cls in POLICY_REGISTRY.items() if cls.has_spatial_state)


def collect_spatial_states(
    agent: PolicyAgent,
    world: TaskWorld,
    episodes: Sequence[Any],
    cfg: Any,
    samples: int = 2000,
    num_envs: int = 8,
    device: str | torch.device = "cpu",
) -> SpatialStates:
    """Run ``agent`` on ``episodes`` until ``samples`` steps are recorded (or the episodes run out)."""
    collector = _StateCollector(agent, samples)
    try:
        run_episodes(collector, world, episodes, cfg, num_envs=num_envs, device=device)
    except _Collected:
        pass
    if not collector.states:
        raise TsneInputError("no ASE states were collected")
    if len(collector.states) < samples:
        logger.warning("collected %d of %d states: the episodes ran out", len(collector.states), samples)
    return SpatialStates(
        np.stack(collector.states).astype(np.float32),
        np.asarray(collector.distance, dtype=np.float32),
        np.asarray(collector.azimuth, dtype=np.float32),
    )


def embed(states: np.ndarray, perplexity: float = 30.0, seed: int = 0, max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE embedding (scikit-learn, PCA initialisation)."""
    from sklearn.manifold import TSNE

    n = len(states)
    if n < 5:
        raise TsneInputError(f"t-SNE needs at least 5 states, got {n}")
    if not np.all(np.isfinite(states)):
        raise TsneInputError("t-SNE states hold NaN or infinite values")
    if np.all(states == states[0]):  # PCA of zero variance gives NaNs, on which scikit-learn's t-SNE crashes
        raise TsneInputError(f"all {n} t-SNE states are identical: there is nothing to embed (is the policy trained?)")
    perplexity = min(perplexity, (n - 1) / 3.0)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter).fit_transform(
        states
    )


def plot_tsne(
    data: SpatialStates,
    path: str | Path,
    title: str = "",
    perplexity: float = 30.0,
    seed: int = 0,
    max_iter: int = 1000,
) -> Path:
    """Two panels of the same embedding: coloured by distance to the target and by relative azimuth."""
    from matplotlib.figure import Figure

    xy = embed(data.states, perplexity, seed, max_iter)
    fig = Figure(figsize=(11, 4.8))
    axes = fig.subplots(1, 2)
    panels = (
        (data.distance, "viridis", "geodesic distance to target (m)", None),
        (data.azimuth, "twilight", "relative azimuth of target (deg, left +)", (-180, 180)),
    )
    for ax, (values, cmap, label, limits) in zip(axes, panels):
        vmin, vmax = limits if limits else (float(values.min()), float(values.max()))
        # a thin grey rim: twilight's ends (a target behind, +-180 deg) are near-white on the white axes
        sc = ax.scatter(
            xy[:, 0], xy[:, 1], c=values, cmap=cmap, vmin=vmin, vmax=vmax, s=8, edgecolors="0.45", linewidths=0.25
        )
        fig.colorbar(sc, ax=ax, label=label)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"t-SNE of ASE audio spatial states ({len(xy)} samples)", fontsize=10)
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=130)
