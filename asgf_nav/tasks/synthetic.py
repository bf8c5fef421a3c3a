"""Small synthetic worlds: a rectangular grid graph with random views and decaying-noise binaural RIRs.

They exercise every code path of the task without baked scenes: unit tests, the throughput benchmark
and quick experiments. RIRs and sounds are deterministic functions of their keys, so two environments
built from the same arguments see identical data.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from asgf_nav.acoustics.simulate import SPEED_OF_SOUND
from asgf_nav.scenes.navgraph import YAW_STEPS
from asgf_nav.tasks.world import TaskScene, TaskWorld

# navgraph.YAW_STEPS: yaw index k faces (dx, dz): 0 -> -Z, 1 -> -X, 2 -> +Z, 3 -> +X


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def grid_scene(
    name: str = "grid",
    nx: int = 5,
    nz: int = 4,
    grid_size: float = 1.0,
    blocked: tuple[tuple[int, int], ...] = (),
    image_size: int = 16,
    sample_rate: int = 16000,
    rir_seconds: float = 0.25,
    num_sources: int | None = None,
    dataset: str = "synthetic",
) -> TaskScene:
    """A grid of ``nx`` x ``nz`` nodes ``grid_size`` apart, minus the ``blocked`` (ix, iz) cells."""
    cells = [(ix, iz) for iz in range(nz) for ix in range(nx) if (ix, iz) not in set(blocked)]
    index = {c: i for i, c in enumerate(cells)}
    n = len(cells)
    positions = np.array([(ix * grid_size, 0.0, iz * grid_size) for ix, iz in cells], dtype=np.float32)
    neighbors = np.full((n, 4), -1, dtype=np.int32)
    for (ix, iz), i in index.items():
        for k, (dx, dz) in enumerate(YAW_STEPS):
            neighbors[i, k] = index.get((ix + int(dx), iz + int(dz)), -1)
    rows, cols = np.nonzero(neighbors >= 0)
    adj = csr_matrix((np.ones(rows.size), (rows, neighbors[rows, cols])), shape=(n, n))
    dist = shortest_path(adj, unweighted=True, directed=False)
    hops = np.where(np.isfinite(dist), dist, -1).astype(np.int32)
    rng = np.random.default_rng(_seed(name, "views"))
    rgb = rng.integers(0, 256, size=(n, 4, image_size, image_size, 3), dtype=np.uint8)
    depth = rng.uniform(0.0, 12.0, size=(n, 4, image_size, image_size)).astype(np.float16)
    count = n if num_sources is None else min(num_sources, n)
    sources = np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)
    return TaskScene(
        name=name,
        dataset=dataset,
        grid_size=grid_size,
        positions=positions,
        neighbors=neighbors,
        geodesic_hops=hops,
        source_nodes=sources,
        sample_rate=sample_rate,
        rir=_SyntheticRirs(name, positions, sample_rate, rir_seconds),
        rgb=rgb,
        depth=depth,
    )


class _SyntheticRirs:
    """Decaying noise with a direct-path delay and a level difference set by the source direction."""

    def __init__(self, name: str, positions: np.ndarray, sample_rate: int, seconds: float) -> None:
        self.name = name
        self.positions = positions
        self.sample_rate = sample_rate
        self.seconds = seconds

    def __call__(self, receiver: int, source: int, yaw: int) -> np.ndarray:
        rng = np.random.default_rng(_seed(self.name, receiver, source, yaw))
        sr = self.sample_rate
        length = int(sr * self.seconds * rng.uniform(0.5, 1.0))
        delta = self.positions[source] - self.positions[receiver]
        dist = float(np.hypot(delta[0], delta[2]))
        delay = int(round(dist / SPEED_OF_SOUND * sr))
        t = np.arange(length) / sr
        decay = np.exp(-t / 0.08)
        theta = np.deg2rad(90.0 * yaw)
        right = delta[0] * np.cos(theta) - delta[2] * np.sin(theta)  # source offset along the right ear axis
        gain = 1.0 / (1.0 + dist)
        pan = np.clip(right / (dist + 1e-6), -1.0, 1.0)
        rir = rng.standard_normal((length, 2)) * decay[:, None] * 0.05 * gain
        if delay < length:
            rir[delay, 0] += gain * (1.0 - 0.5 * pan)
            rir[delay, 1] += gain * (1.0 + 0.5 * pan)
        return rir.astype(np.float32)


def synthetic_sound(name: str, sample_rate: int) -> np.ndarray:
    """One second of a name-seeded harmonic tone in noise (different names sound different)."""
    rng = np.random.default_rng(_seed("sound", name))
    t = np.arange(sample_rate) / sample_rate
    f0 = rng.uniform(150.0, 1200.0)
    wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
    wave = wave + 0.3 * rng.standard_normal(sample_rate)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def synthetic_world(
    scenes: list[TaskScene] | None = None, sample_rate: int = 16000, dataset: str = "synthetic"
) -> TaskWorld:
    """A world of the given scenes (default: two 5x4 grids, one with a blocked cell) with synthetic sounds.

    The default grids' views are 16 px, below the visual CNN's smallest input (36 px): for a policy that reads
    rgb or depth, pass scenes made with ``grid_scene(..., image_size=64)``."""
    if scenes is None:
        scenes = [
            grid_scene("grid_a", sample_rate=sample_rate, dataset=dataset),
            grid_scene("grid_b", blocked=((2, 1), (2, 2)), sample_rate=sample_rate, dataset=dataset),
        ]
    return TaskWorld(dataset, sample_rate, {s.name: s for s in scenes}, lambda n: synthetic_sound(n, sample_rate))
