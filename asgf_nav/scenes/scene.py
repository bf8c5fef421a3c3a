"""Read side of a baked embedded scene: floor plan, navigation graph, geodesics and RGB-D views."""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from pathlib import Path

import numpy as np

from asgf_nav.scenes.floorplan import FloorPlan
from asgf_nav.scenes.store import SceneStore, SceneStoreError, rebuild_hint, scene_dir

FLOORPLAN_FILE = "floorplan.json"


def read_floorplan(directory: Path) -> FloorPlan:
    """A scene's floor plan; a missing or damaged file is a SceneStoreError with the command that bakes it again."""
    path = directory / FLOORPLAN_FILE
    if not path.exists():
        raise SceneStoreError(f"scene {directory} lacks {path}; {rebuild_hint(path, 'layout')}")
    try:
        return FloorPlan.load(path)
    except ValueError as exc:
        raise SceneStoreError(f"{exc}; {rebuild_hint(path, 'layout')}") from None


def layout_digest(store: SceneStore) -> str:
    """Fingerprint of a scene's layout (node positions and floor plan): stages baked from it record it."""
    h = hashlib.sha256(np.ascontiguousarray(store.array("positions")).tobytes())
    h.update(store.file_bytes(FLOORPLAN_FILE))
    return h.hexdigest()[:16]


YAWS: tuple[int, ...] = (0, 90, 180, 270)  # yaw index k <-> yaw 90*k degrees


class Scene:
    """One baked scene. Arrays are memory-mapped; ``rgb``/``depth`` need the "vision" stage.

    ``rgb[n, k]`` and ``depth[n, k]`` are the views from node ``n`` at yaw ``90*k`` degrees, and
    ``neighbors[n, k]`` is the node MOVE_FORWARD reaches from there (-1 when blocked).
    """

    def __init__(self, directory: str | Path) -> None:
        self.store = SceneStore(directory)
        self.store.require("layout")
        self.directory = self.store.directory
        n = len(self.positions)
        expected = {"positions": (n, 3), "neighbors": (n, 4), "geodesic_hops": (n, n)}
        for name, shape in expected.items():
            if self.store.array(name).shape != shape:
                raise SceneStoreError(
                    f"scene array {self.directory / (name + '.npy')} has shape {self.store.array(name).shape}, "
                    f"expected {shape}; {self.store.rebuild_hint(self.directory / (name + '.npy'))}"
                )

    @classmethod
    def open(cls, data_root: str | Path, dataset: str, scene_name: str) -> Scene:
        return cls(scene_dir(data_root, dataset, scene_name))

    def __repr__(self) -> str:
        return f"Scene({self.dataset}/{self.name}, {self.num_nodes} nodes, stages={self.store.stages})"

    # ----------------------------------------------------------------- layout
    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def layout_meta(self) -> dict:
        return self.store.meta("layout")

    @property
    def dataset(self) -> str:
        return str(self.layout_meta.get("dataset", self.directory.parent.name))

    @property
    def grid_size(self) -> float:
        return float(self.layout_meta["grid_size"])

    @cached_property
    def floorplan(self) -> FloorPlan:
        return read_floorplan(self.directory)

    @property
    def positions(self) -> np.ndarray:
        return self.store.array("positions")

    @cached_property  # checked once per opened scene
    def neighbors(self) -> np.ndarray:
        neighbors = self.store.array("neighbors")
        if neighbors.size and not (-1 <= neighbors.min() and neighbors.max() < len(neighbors)):
            raise self.store.damaged("neighbors", f"holds node indices outside [-1, {len(neighbors)})")
        return neighbors

    @property
    def geodesic_hops(self) -> np.ndarray:
        return self.store.array("geodesic_hops")

    @property
    def num_nodes(self) -> int:
        return int(len(self.positions))

    def geodesic_distance(self, a: int, b: int) -> float:
        """Shortest-path distance in metres between nodes ``a`` and ``b`` (hops times grid size); inf when
        no path joins them (stored as -1 hops)."""
        hops = int(self.geodesic_hops[a, b])
        return math.inf if hops < 0 else hops * self.grid_size

    @cached_property
    def _node_index(self) -> dict[tuple[int, int], int]:
        cells = np.rint(np.asarray(self.positions)[:, [0, 2]] / self.grid_size).astype(np.int64)
        return {(int(x), int(z)): n for n, (x, z) in enumerate(cells)}

    def node_at(self, position: np.ndarray | tuple[float, ...], tolerance: float = 1e-2) -> int:
        """Node id at habitat ``position`` (x, y, z); KeyError when no node is within ``tolerance``."""
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        cell = (int(np.rint(p[0] / self.grid_size)), int(np.rint(p[2] / self.grid_size)))
        node = self._node_index.get(cell)
        if node is None or np.abs(self.positions[node][[0, 2]] - p[[0, 2]]).max() > tolerance:
            raise KeyError(f"position {p.tolist()} is not a navigation node of scene {self.dataset}/{self.name}")
        return node

    # ----------------------------------------------------------------- vision
    @property
    def has_vision(self) -> bool:
        return self.store.has_stage("vision")

    @property
    def image_size(self) -> int:
        return int(self.store.meta("vision")["image_size"])

    @property
    def rgb(self) -> np.ndarray:
        """(N, 4, H, W, 3) uint8 memmap."""
        self.store.require("vision")
        return self.store.array("rgb")

    @property
    def depth(self) -> np.ndarray:
        """(N, 4, H, W) float16 memmap, metres along the optical axis (0 = no hit)."""
        self.store.require("vision")
        return self.store.array("depth")
