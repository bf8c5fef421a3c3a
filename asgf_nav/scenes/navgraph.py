"""Navigation graph on a regular grid, as SoundSpaces uses: axis-aligned 4-connected walkable points.

A grid point is a node when it lies on the free floor (a room interior or a doorway gap) at least
``clearance`` metres from every wall and furniture footprint. Two neighbouring nodes are joined when the
straight step between them keeps ``edge_margin`` metres from every solid, so an edge never passes through
a wall, a door jamb or a piece of furniture. Only the largest connected component is kept, and the
geodesic distance between nodes is the hop count (times the grid size), computed by
:func:`scipy.sparse.csgraph.shortest_path` on the unweighted graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, shortest_path

from asgf_nav.scenes.floorplan import FloorPlan, yaw_forward

logger = logging.getLogger(__name__)

DEFAULT_CLEARANCE = 0.15  # metres from a node to the nearest solid (agent radius plus a little)
DEFAULT_EDGE_MARGIN = 0.10  # metres a step keeps from every solid (habitat's agent radius)

# Step direction (dx, dz) of MOVE_FORWARD at yaw 90*k: k=0 -> -Z, 1 -> -X, 2 -> +Z, 3 -> +X.
YAW_STEPS: np.ndarray = np.rint(np.stack([yaw_forward(90.0 * k) for k in range(4)])).astype(np.int64)


@dataclass
class GridGraph:
    """Every walkable grid node with its 4 neighbours (-1 where no step is possible), before pruning."""

    positions: np.ndarray  # (N, 3) float32, habitat coordinates, y = 0
    neighbors: np.ndarray  # (N, 4) int32, neighbors[n, k] = node one step ahead at yaw 90*k

    @property
    def num_nodes(self) -> int:
        return int(len(self.positions))

    def components(self) -> np.ndarray:
        """Connected-component label per node."""
        if self.num_nodes == 0:
            return np.zeros(0, dtype=np.int64)
        _, labels = connected_components(_adjacency(self.neighbors), directed=False)
        return labels


@dataclass
class NavGraph:
    positions: np.ndarray  # (N, 3) float32
    neighbors: np.ndarray  # (N, 4) int32
    geodesic_hops: np.ndarray  # (N, N) int16 (int32 when a path is longer than int16 allows)
    grid_size: float

    @property
    def num_nodes(self) -> int:
        return int(len(self.positions))


def _adjacency(neighbors: np.ndarray) -> coo_matrix:
    n = len(neighbors)
    src, k = np.nonzero(neighbors >= 0)
    dst = neighbors[src, k]
    return coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n)).tocsr()


def solid_rects(floorplan: FloorPlan) -> np.ndarray:
    """(K, 4) array of x0, z0, x1, z1 footprints of everything that blocks walking."""
    solids = floorplan.solids()
    if not solids:
        return np.zeros((0, 4))
    return np.array([s.footprint for s in solids], dtype=np.float64)


def point_rect_distance(points: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(M, K) Euclidean distance from each X-Z point to each rectangle (0 inside)."""
    px, pz = points[:, 0:1], points[:, 1:2]
    dx = np.maximum(np.maximum(rects[None, :, 0] - px, px - rects[None, :, 2]), 0.0)
    dz = np.maximum(np.maximum(rects[None, :, 1] - pz, pz - rects[None, :, 3]), 0.0)
    return np.hypot(dx, dz)


def axis_segments_blocked(a: np.ndarray, b: np.ndarray, rects: np.ndarray, margin: float) -> np.ndarray:
    """Vectorised FloorPlan.segment_blocked for axis-aligned segments a[i] -> b[i] (closed intervals)."""
    if len(rects) == 0 or len(a) == 0:
        return np.zeros(len(a), dtype=bool)
    lo = np.minimum(a, b)[:, None, :]
    hi = np.maximum(a, b)[:, None, :]
    r0 = rects[None, :, 0:2] - margin
    r1 = rects[None, :, 2:4] + margin
    overlap = (lo <= r1) & (hi >= r0)
    return np.any(overlap[..., 0] & overlap[..., 1], axis=1)


def _free_floor_mask(floorplan: FloorPlan, points: np.ndarray) -> np.ndarray:
    rects = [(r.x0, r.z0, r.x1, r.z1) for r in floorplan.rooms] + [(d.x0, d.z0, d.x1, d.z1) for d in floorplan.doorways]
    arr = np.array(rects, dtype=np.float64).reshape(-1, 4)
    px, pz = points[:, 0:1], points[:, 1:2]
    inside = (arr[None, :, 0] <= px) & (px <= arr[None, :, 2]) & (arr[None, :, 1] <= pz) & (pz <= arr[None, :, 3])
    return inside.any(axis=1)


def build_grid_graph(
    floorplan: FloorPlan,
    grid_size: float,
    clearance: float = DEFAULT_CLEARANCE,
    edge_margin: float = DEFAULT_EDGE_MARGIN,
) -> GridGraph:
    """All walkable grid nodes (multiples of ``grid_size``) and their unobstructed 4-neighbour steps."""
    if grid_size <= 0:
        raise ValueError(f"grid_size must be positive, got {grid_size}")
    x0, z0, x1, z1 = floorplan.bounds
    ix = np.arange(np.ceil(x0 / grid_size), np.floor(x1 / grid_size) + 1, dtype=np.int64)
    iz = np.arange(np.ceil(z0 / grid_size), np.floor(z1 / grid_size) + 1, dtype=np.int64)
    gz, gx = np.meshgrid(iz, ix, indexing="ij")  # row-major by z, then x
    cells = np.stack([gx.ravel(), gz.ravel()], axis=1)
    points = cells * grid_size
    rects = solid_rects(floorplan)
    keep = _free_floor_mask(floorplan, points)
    if len(rects):
        keep &= point_rect_distance(points, rects).min(axis=1) >= clearance
    cells, points = cells[keep], points[keep]

    index = {(int(c[0]), int(c[1])): n for n, c in enumerate(cells)}
    neighbors = np.full((len(cells), 4), -1, dtype=np.int32)
    for k, step in enumerate(YAW_STEPS):
        targets = cells + step
        target_ids = np.array([index.get((int(t[0]), int(t[1])), -1) for t in targets], dtype=np.int64)
        has = target_ids >= 0
        blocked = axis_segments_blocked(points[has], targets[has] * grid_size, rects, edge_margin)
        ok = np.flatnonzero(has)[~blocked]
        neighbors[ok, k] = target_ids[ok]
    positions = np.zeros((len(cells), 3), dtype=np.float32)
    positions[:, 0] = points[:, 0]
    positions[:, 2] = points[:, 1]
    return GridGraph(positions=positions, neighbors=neighbors)


def largest_component(graph: GridGraph) -> GridGraph:
    """The sub-graph of the largest connected component, nodes renumbered in their original order."""
    if graph.num_nodes == 0:
        return graph
    labels = graph.components()
    counts = np.bincount(labels)
    keep = labels == int(np.argmax(counts))
    remap = np.full(graph.num_nodes + 1, -1, dtype=np.int64)  # last slot maps the -1 sentinel
    remap[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    neighbors = remap[graph.neighbors[keep]].astype(np.int32)
    return GridGraph(positions=graph.positions[keep].copy(), neighbors=neighbors)


def geodesic_hops(neighbors: np.ndarray) -> np.ndarray:
    """All-pairs hop counts (shortest paths with unit edges); raises if the graph is not connected."""
    n = len(neighbors)
    if n == 0:
        return np.zeros((0, 0), dtype=np.int16)
    dist = shortest_path(_adjacency(neighbors), method="D", directed=False, unweighted=True)
    if not np.all(np.isfinite(dist)):
        raise ValueError("navigation graph is not connected; keep its largest component first")
    dtype = np.int16 if dist.max() < np.iinfo(np.int16).max else np.int32
    return dist.astype(dtype)


def build_navgraph(
    floorplan: FloorPlan,
    grid_size: float,
    clearance: float = DEFAULT_CLEARANCE,
    edge_margin: float = DEFAULT_EDGE_MARGIN,
) -> NavGraph:
    """Largest connected walkable grid graph of ``floorplan`` with its geodesic hop table."""
    graph = largest_component(build_grid_graph(floorplan, grid_size, clearance, edge_margin))
    if graph.num_nodes == 0:
        raise ValueError(f"floor plan {floorplan.name!r} has no walkable grid node at grid size {grid_size}")
    hops = geodesic_hops(graph.neighbors)
    logger.debug("navgraph %s: %d nodes, diameter %d hops", floorplan.name, graph.num_nodes, int(hops.max()))
    return NavGraph(graph.positions, graph.neighbors, hops, grid_size)
